/*
 * edge_frame.h - reference device-side encoder of the edge-agent serial frame protocol, version 1.
 *
 * Wire format (docs/serial-protocol.md): 0x00 | COBS(header | payload | CRC-16/CCITT-FALSE) | 0x00,
 * little-endian, header = version u8, type u8, sequence u16, device time u64 (microseconds).
 *
 * Portable C99, no malloc, no global state. A frame is composed in a caller-owned ef_frame_t
 * (about 1 KiB; make it static on small MCUs) and stuffed into a caller-provided output buffer of
 * at least EF_MAX_WIRE_SIZE bytes. Every function that can fail returns 0 (no bytes) on failure:
 * a field that does not fit, a string over 255 bytes, or an output buffer that is too small.
 */
#ifndef EDGE_FRAME_H
#define EDGE_FRAME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EF_PROTOCOL_VERSION 1u
#define EF_HEADER_SIZE 12u
#define EF_CRC_SIZE 2u
#define EF_MAX_FRAME_SIZE 1024u /* header + payload + CRC, before COBS */
#define EF_MAX_PAYLOAD_SIZE (EF_MAX_FRAME_SIZE - EF_HEADER_SIZE - EF_CRC_SIZE)
/* COBS adds one byte per started 254, plus one; two delimiters around the frame */
#define EF_MAX_WIRE_SIZE (EF_MAX_FRAME_SIZE + EF_MAX_FRAME_SIZE / 254u + 1u + 2u)

enum ef_msg_type {
    EF_MSG_HELLO = 0x01,
    EF_MSG_DATA = 0x02,
    EF_MSG_EVENT = 0x03,
    EF_MSG_ACK = 0x04,
    EF_MSG_COMMAND = 0x81
};

enum ef_sample_type { EF_SAMPLE_INT16 = 1, EF_SAMPLE_INT32 = 2 };

enum ef_event_kind { EF_EVENT_FAULT = 1, EF_EVENT_BUTTON = 2, EF_EVENT_BATTERY_LOW = 3 };

enum ef_ack_status { EF_ACK_OK = 0, EF_ACK_UNSUPPORTED = 1, EF_ACK_BAD_ARGUMENT = 2 };

/* One entry of the HELLO channel table: physical = raw * scale + offset, in unit. */
typedef struct {
    const char *name;
    const char *unit;
    uint8_t sample_type; /* enum ef_sample_type */
    float rate_hz;
    float scale;
    float offset;
} ef_channel_t;

/* A frame being composed: header + payload, before CRC and stuffing. */
typedef struct {
    uint8_t raw[EF_MAX_FRAME_SIZE];
    size_t len;
    int overflow; /* set when a put did not fit; ef_finish then fails */
} ef_frame_t;

/* CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF): pass 0xFFFF as crc to start. */
uint16_t ef_crc16(const uint8_t *data, size_t len, uint16_t crc);

/* COBS-encode len bytes of src into dst (no delimiter); returns the encoded length, 0 if cap is short. */
size_t ef_cobs_encode(const uint8_t *src, size_t len, uint8_t *dst, size_t cap);

/* Low-level composition: begin, put fields, finish. */
void ef_begin(ef_frame_t *f, uint8_t msg_type, uint16_t seq, uint64_t device_time_us);
void ef_put_u8(ef_frame_t *f, uint8_t v);
void ef_put_u16(ef_frame_t *f, uint16_t v);
void ef_put_u32(ef_frame_t *f, uint32_t v);
void ef_put_u64(ef_frame_t *f, uint64_t v);
void ef_put_f32(ef_frame_t *f, float v);
void ef_put_str(ef_frame_t *f, const char *s); /* u8 length + UTF-8 bytes */
/* Append the CRC, stuff, add both delimiters into out; returns wire length or 0. */
size_t ef_finish(ef_frame_t *f, uint8_t *out, size_t cap);

/* Message builders: compose and finish in one call; each returns wire length or 0. */
size_t ef_build_hello(ef_frame_t *f, uint8_t *out, size_t cap, uint16_t seq, uint64_t time_us,
                      const char *device_id, uint8_t fw_major, uint8_t fw_minor, uint16_t fw_patch,
                      const ef_channel_t *channels, uint8_t n_channels);

/* samples are interleaved: samples[i * n_channels + c] is sample i of channels[c]. */
size_t ef_build_data_i16(ef_frame_t *f, uint8_t *out, size_t cap, uint16_t seq, uint64_t time_us,
                         uint64_t first_sample_us, const uint8_t *channels, uint8_t n_channels,
                         const int16_t *samples, uint16_t n_samples);
size_t ef_build_data_i32(ef_frame_t *f, uint8_t *out, size_t cap, uint16_t seq, uint64_t time_us,
                         uint64_t first_sample_us, const uint8_t *channels, uint8_t n_channels,
                         const int32_t *samples, uint16_t n_samples);

size_t ef_build_event(ef_frame_t *f, uint8_t *out, size_t cap, uint16_t seq, uint64_t time_us,
                      uint8_t kind, uint16_t code, int32_t value);

size_t ef_build_ack(ef_frame_t *f, uint8_t *out, size_t cap, uint16_t seq, uint64_t time_us,
                    uint16_t command_seq, uint8_t status);

#ifdef __cplusplus
}
#endif

#endif /* EDGE_FRAME_H */
