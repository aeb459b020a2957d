/* glip-rt C ABI: GLIP phrase-grounding detection from C/C++.
 * Link with -lglip_rt (target/release/libglip_rt.so). See src/capi.rs.
 * Every call returns NULL / -1 on failure; glip_last_error() then says why.
 * A detector handle must not be used by two threads at the same time. */
#ifndef GLIP_RT_H
#define GLIP_RT_H
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

typedef struct GlipDetector GlipDetector;

/* xyxy box in original-image pixels, score in [0, 1], 1-based label of the prompt's phrase. */
typedef struct GlipDetection {
    float x1, y1, x2, y2;
    float score;
    uint32_t label;
} GlipDetection;

/* config: GLIP's yaml; weights: safetensors (glip convert); bert_config, tokenizer: NULL for
 * bert-base-uncased. Runs where "auto" picks (a GPU when present, else the CPU). Returns NULL
 * on failure. */
GlipDetector* glip_detector_new(const char* config, const char* weights,
                                const char* bert_config, const char* tokenizer);
/* The same on a chosen device: "auto", "cpu", "cuda", "cuda:N", "emu" (the emulated CUDA
 * device), or NULL for "auto". An unknown or absent device returns NULL (see
 * glip_last_error). */
GlipDetector* glip_detector_new_on(const char* config, const char* weights,
                                   const char* bert_config, const char* tokenizer,
                                   const char* device);
/* prompt: "person. bicycle. traffic light." Encoded once; returns 0 or -1. */
int32_t glip_detector_set_prompt(GlipDetector* det, const char* prompt);
/* rgb: width*height*3 bytes (RGB24, row-major). Writes min(found, capacity) detections to out
 * and the number found to *count. Returns 0 or -1. */
int32_t glip_detector_detect_rgb(const GlipDetector* det, const uint8_t* rgb, uint32_t width,
                                 uint32_t height, GlipDetection* out, uint32_t capacity,
                                 uint32_t* count);
/* The phrase text of a label (valid until the next set_prompt/free), or NULL. */
const char* glip_detector_phrase(const GlipDetector* det, uint32_t label);
/* This thread's last error message ("" if none). */
const char* glip_last_error(void);
void glip_detector_free(GlipDetector* det);

#ifdef __cplusplus
}
#endif
#endif
