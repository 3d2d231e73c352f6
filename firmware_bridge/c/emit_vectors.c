/*
 * emit_vectors.c - writes a fixed sequence of frames built with edge_frame.c to stdout, so the
 * Python decoder can be checked against the reference C encoder (tests/firmware_bridge).
 * Build: gcc -std=c99 -Wall -Wextra -Werror -pedantic edge_frame.c emit_vectors.c -o emit_vectors
 */
#include <stdint.h>
#include <stdio.h>

#include "edge_frame.h"

static ef_frame_t frame; /* static, as on an MCU: 1 KiB that never lives on a small stack */
static uint8_t wire[EF_MAX_WIRE_SIZE];

static int emit(size_t n) {
    if (n == 0) {
        fputs("emit_vectors: a frame did not fit\n", stderr);
        return 1;
    }
    return fwrite(wire, 1, n, stdout) == n ? 0 : 1;
}

int main(void) {
    static const ef_channel_t channels[2] = {
        {"pressure", "kPa", EF_SAMPLE_INT16, 100.0f, 0.01f, 0.0f},
        {"temp", "\xc2\xb0" "C", EF_SAMPLE_INT16, 1.0f, 0.1f, -40.0f},
    };
    static const uint8_t both[2] = {0, 1};
    static const uint8_t first[1] = {0};
    static const int16_t block16[6] = {100, 250, -100, 251, 32767, -32768};
    static const int32_t block32[4] = {INT32_MIN, 0, INT32_MAX, 123456};
    static int16_t big[498];
    static int16_t zeros[200];
    static int32_t too_many[400]; /* 200 samples x 2 channels x 4 bytes: over EF_MAX_FRAME_SIZE */
    uint8_t small[8];
    int i, rc = 0;

    for (i = 0; i < 498; i++) {
        big[i] = (int16_t)(i * 7 - 1000);
    }

    rc |= emit(ef_build_hello(&frame, wire, sizeof wire, 0, 500, "pump-7", 1, 4, 2, channels, 2));
    rc |= emit(ef_build_data_i16(&frame, wire, sizeof wire, 1, 1000, 1000000u, both, 2, block16, 3));
    rc |= emit(ef_build_data_i32(&frame, wire, sizeof wire, 2, 2000, 2000000u, first, 1, block32, 4));
    /* the worked example of docs/serial-protocol.md; sequence 3..6 are skipped on purpose (gap 4) */
    rc |= emit(ef_build_event(&frame, wire, sizeof wire, 7, 1000000u, EF_EVENT_BATTERY_LOW, 15, 3700));
    rc |= emit(ef_build_ack(&frame, wire, sizeof wire, 8, 1000001u, 3, EF_ACK_OK));
    rc |= emit(ef_build_data_i16(&frame, wire, sizeof wire, 9, UINT64_C(0xFFFFFFFFFFFF), 42u, first, 1, big, 498));
    rc |= emit(ef_build_data_i16(&frame, wire, sizeof wire, 10, 3000, 3000u, first, 1, zeros, 200));
    rc |= emit(ef_build_event(&frame, wire, sizeof wire, 11, 4000, EF_EVENT_FAULT, 513, -7));

    /* refusals: a block over EF_MAX_FRAME_SIZE, and an output buffer that is too small */
    if (ef_build_data_i32(&frame, wire, sizeof wire, 12, 0, 0, both, 2, too_many, 200) != 0 ||
        ef_build_event(&frame, small, sizeof small, 12, 0, EF_EVENT_BUTTON, 1, 1) != 0) {
        fputs("emit_vectors: size limits not enforced\n", stderr);
        rc = 1;
    }
    return rc;
}
