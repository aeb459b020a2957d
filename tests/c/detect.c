/* C ABI smoke program: detect in a raw RGB24 file and print "label phrase score x1 y1 x2 y2"
 * lines; exercises the error path too. Built and run by tests/capi.rs. */
#include <stdio.h>
#include <stdlib.h>
#include "glip.h"

int main(int argc, char** argv) {
    if (argc != 8) { fprintf(stderr, "usage: config weights bert rgbfile width height prompt\n"); return 2; }
    GlipDetector* bad = glip_detector_new(argv[1], "/nonexistent.safetensors", argv[3], NULL);
    if (bad != NULL || glip_last_error()[0] == 0) { fprintf(stderr, "missing weights must fail\n"); return 3; }
    printf("error: %s\n", glip_last_error());
    GlipDetector* det = glip_detector_new(argv[1], argv[2], argv[3], NULL);
    if (!det) { fprintf(stderr, "new: %s\n", glip_last_error()); return 4; }
    if (glip_detector_set_prompt(det, "") == 0) { fprintf(stderr, "empty prompt must fail\n"); return 5; }
    if (glip_detector_set_prompt(det, argv[7]) != 0) { fprintf(stderr, "prompt: %s\n", glip_last_error()); return 6; }
    uint32_t w = (uint32_t)atoi(argv[5]), h = (uint32_t)atoi(argv[6]);
    size_t n = (size_t)w * h * 3;
    uint8_t* rgb = malloc(n);
    FILE* f = fopen(argv[4], "rb");
    if (!f || fread(rgb, 1, n, f) != n) { fprintf(stderr, "cannot read %s\n", argv[4]); return 7; }
    fclose(f);
    GlipDetection out[16];
    uint32_t count = 0;
    if (glip_detector_detect_rgb(det, rgb, w, h, out, 16, &count) != 0) { fprintf(stderr, "detect: %s\n", glip_last_error()); return 8; }
    printf("count %u\n", count);
    for (uint32_t i = 0; i < count && i < 16; i++) {
        const char* p = glip_detector_phrase(det, out[i].label);
        printf("%u %s %.6f %.3f %.3f %.3f %.3f\n", out[i].label, p ? p : "?", out[i].score, out[i].x1, out[i].y1, out[i].x2, out[i].y2);
    }
    free(rgb);
    glip_detector_free(det);
    return 0;
}
