/*
 * edge_frame.c - reference device-side encoder of the edge-agent serial frame protocol.
 * See edge_frame.h and docs/serial-protocol.md. Byte order is written explicitly, so the code is
 * independent of the host's endianness; floats are assumed to be IEEE-754 binary32.
 */
#include "edge_frame.h"

#include <string.h>

/* C99 has no static_assert: a negative array size stops the build if float is not 32 bits. */
typedef char ef_float_is_32_bits[(sizeof(float) == 4) ? 1 : -1];

uint16_t ef_crc16(const uint8_t *data, size_t len, uint16_t crc) {
    size_t i;
    int bit;
    for (i = 0; i < len; i++) {
        crc ^= (uint16_t)((uint16_t)data[i] << 8);
        for (bit = 0; bit < 8; bit++) {
            crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
        }
    }
    return crc;
}

size_t ef_cobs_encode(const uint8_t *src, size_t len, uint8_t *dst, size_t cap) {
    size_t read = 0;
    size_t write = 1;     /* dst[0] is reserved for the first code byte */
    size_t code_pos = 0;  /* where the current block's code byte goes */
    uint8_t code = 1;     /* 1 + number of data bytes in the current block */
    if (cap == 0) {
        return 0;
    }
    while (read < len) {
        if (src[read] == 0) {
            dst[code_pos] = code;
            code_pos = write++;
            code = 1;
        } else {
            if (write >= cap) {
                return 0;
            }
            dst[write++] = src[read];
            code++;
            if (code == 0xFF) { /* full block of 254 bytes: close it, no implied zero */
                dst[code_pos] = code;
                code_pos = write++;
                code = 1;
            }
        }
        if (write > cap) {
            return 0;
        }
        read++;
    }
    dst[code_pos] = code;
    return write;
}

void ef_begin(ef_frame_t *f, uint8_t msg_type, uint16_t seq, uint64_t device_time_us) {
    f->len = 0;
    f->overflow = 0;
    ef_put_u8(f, (uint8_t)EF_PROTOCOL_VERSION);
    ef_put_u8(f, msg_type);
    ef_put_u16(f, seq);
    ef_put_u64(f, device_time_us);
}

static void put_bytes(ef_frame_t *f, const uint8_t *p, size_t n) {
    /* keep room for the CRC so that ef_finish never overflows raw[] */
    if (f->overflow || n > EF_MAX_FRAME_SIZE - EF_CRC_SIZE - f->len) {
        f->overflow = 1;
        return;
    }
    memcpy(&f->raw[f->len], p, n);
    f->len += n;
}

void ef_put_u8(ef_frame_t *f, uint8_t v) { put_bytes(f, &v, 1); }

void ef_put_u16(ef_frame_t *f, uint16_t v) {
    uint8_t b[2];
    b[0] = (uint8_t)(v & 0xFFu);
    b[1] = (uint8_t)(v >> 8);
    put_bytes(f, b, 2);
}

void ef_put_u32(ef_frame_t *f, uint32_t v) {
    uint8_t b[4];
    int i;
    for (i = 0; i < 4; i++) {
        b[i] = (uint8_t)((v >> (8 * i)) & 0xFFu);
    }
    put_bytes(f, b, 4);
}

void ef_put_u64(ef_frame_t *f, uint64_t v) {
    uint8_t b[8];
    int i;
    for (i = 0; i < 8; i++) {
        b[i] = (uint8_t)((v >> (8 * i)) & 0xFFu);
    }
    put_bytes(f, b, 8);
}

void ef_put_f32(ef_frame_t *f, float v) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    ef_put_u32(f, bits);
}

void ef_put_str(ef_frame_t *f, const char *s) {
    size_t n = strlen(s);
    if (n > 255u) {
        f->overflow = 1;
        return;
    }
    ef_put_u8(f, (uint8_t)n);
    put_bytes(f, (const uint8_t *)s, n);
}

size_t ef_finish(ef_frame_t *f, uint8_t *out, size_t cap) {
    uint16_t crc;
    size_t n;
    if (f->overflow || cap < 3) {
        return 0;
    }
    crc = ef_crc16(f->raw, f->len, 0xFFFFu);
    f->raw[f->len] = (uint8_t)(crc & 0xFFu);
    f->raw[f->len + 1] = (uint8_t)(crc >> 8);
    out[0] = 0x00;
    n = ef_cobs_encode(f->raw, f->len + EF_CRC_SIZE, out + 1, cap - 2);
    if (n == 0) {
        return 0;
    }
    out[n + 1] = 0x00;
    return n + 2;
}

size_t ef_build_hello(ef_frame_t *f, uint8_t *out, size_t cap, uint16_t seq, uint64_t time_us,
                      const char *device_id, uint8_t fw_major, uint8_t fw_minor, uint16_t fw_patch,
                      const ef_channel_t *channels, uint8_t n_channels) {
    uint8_t i;
    ef_begin(f, EF_MSG_HELLO, seq, time_us);
    ef_put_str(f, device_id);
    ef_put_u8(f, fw_major);
    ef_put_u8(f, fw_minor);
    ef_put_u16(f, fw_patch);
    ef_put_u8(f, n_channels);
    for (i = 0; i < n_channels; i++) {
        ef_put_str(f, channels[i].name);
        ef_put_str(f, channels[i].unit);
        ef_put_u8(f, channels[i].sample_type);
        ef_put_f32(f, channels[i].rate_hz);
        ef_put_f32(f, channels[i].scale);
        ef_put_f32(f, channels[i].offset);
    }
    return ef_finish(f, out, cap);
}

static void data_head(ef_frame_t *f, uint16_t seq, uint64_t time_us, uint64_t first_sample_us,
                      uint8_t sample_type, const uint8_t *channels, uint8_t n_channels, uint16_t n_samples) {
    uint8_t i;
    ef_begin(f, EF_MSG_DATA, seq, time_us);
    ef_put_u64(f, first_sample_us);
    ef_put_u8(f, sample_type);
    ef_put_u8(f, n_channels);
    for (i = 0; i < n_channels; i++) {
        ef_put_u8(f, channels[i]);
    }
    ef_put_u16(f, n_samples);
    if (n_channels == 0) {
        f->overflow = 1; /* a DATA block needs at least one channel */
    }
}

size_t ef_build_data_i16(ef_frame_t *f, uint8_t *out, size_t cap, uint16_t seq, uint64_t time_us,
                         uint64_t first_sample_us, const uint8_t *channels, uint8_t n_channels,
                         const int16_t *samples, uint16_t n_samples) {
    size_t i, total = (size_t)n_samples * n_channels;
    data_head(f, seq, time_us, first_sample_us, EF_SAMPLE_INT16, channels, n_channels, n_samples);
    for (i = 0; i < total && !f->overflow; i++) {
        ef_put_u16(f, (uint16_t)samples[i]);
    }
    return ef_finish(f, out, cap);
}

size_t ef_build_data_i32(ef_frame_t *f, uint8_t *out, size_t cap, uint16_t seq, uint64_t time_us,
                         uint64_t first_sample_us, const uint8_t *channels, uint8_t n_channels,
                         const int32_t *samples, uint16_t n_samples) {
    size_t i, total = (size_t)n_samples * n_channels;
    data_head(f, seq, time_us, first_sample_us, EF_SAMPLE_INT32, channels, n_channels, n_samples);
    for (i = 0; i < total && !f->overflow; i++) {
        ef_put_u32(f, (uint32_t)samples[i]);
    }
    return ef_finish(f, out, cap);
}

size_t ef_build_event(ef_frame_t *f, uint8_t *out, size_t cap, uint16_t seq, uint64_t time_us,
                      uint8_t kind, uint16_t code, int32_t value) {
    ef_begin(f, EF_MSG_EVENT, seq, time_us);
    ef_put_u8(f, kind);
    ef_put_u16(f, code);
    ef_put_u32(f, (uint32_t)value);
    return ef_finish(f, out, cap);
}

size_t ef_build_ack(ef_frame_t *f, uint8_t *out, size_t cap, uint16_t seq, uint64_t time_us,
                    uint16_t command_seq, uint8_t status) {
    ef_begin(f, EF_MSG_ACK, seq, time_us);
    ef_put_u16(f, command_seq);
    ef_put_u8(f, status);
    return ef_finish(f, out, cap);
}
