/* C ABI driver for the bad-input corpus (tests/bad_inputs.rs): one call sequence per run,
 * arguments passed through so each case can hand the library what a careless or hostile C
 * caller would. "NULL" stands for a NULL pointer.
 *
 *   bad_inputs CONFIG WEIGHTS BERT TOKENIZER PROMPT [WIDTH HEIGHT [RGBFILE]]
 *
 * Without RGBFILE a 3-byte buffer is passed whatever WIDTH x HEIGHT says: the library must
 * refuse a size it cannot have been given before it reads the frame. Exit 0 on success, 1
 * with "error: <glip_last_error()>" on a refused call, 2 on bad usage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "glip.h"

static const char* arg(const char* s) { return strcmp(s, "NULL") == 0 ? NULL : s; }

static int fail(const char* what) {
    const char* e = glip_last_error();
    printf("error: %s: %s\n", what, e && e[0] ? e : "(no message)");
    return 1;
}

int main(int argc, char** argv) {
    if (argc != 6 && argc != 8 && argc != 9) {
        fprintf(stderr, "usage: config weights bert tokenizer prompt [width height [rgbfile]]\n");
        return 2;
    }
    /* Calls on a NULL handle must be refused, not crash. */
    if (glip_detector_set_prompt(NULL, "a.") == 0) { printf("NULL handle accepted\n"); return 3; }
    GlipDetector* det = glip_detector_new(arg(argv[1]), arg(argv[2]), arg(argv[3]), arg(argv[4]));
    if (!det) return fail("new");
    if (glip_detector_set_prompt(det, arg(argv[5])) != 0) { int r = fail("prompt"); glip_detector_free(det); return r; }
    if (argc >= 8) {
        uint32_t w = (uint32_t)strtoul(argv[6], NULL, 10), h = (uint32_t)strtoul(argv[7], NULL, 10);
        uint8_t small[3] = {0, 0, 0};
        uint8_t* rgb = small;
        if (argc == 9) {
            size_t n = (size_t)w * h * 3;
            rgb = malloc(n ? n : 1);
            FILE* f = fopen(argv[8], "rb");
            if (!rgb || !f || fread(rgb, 1, n, f) != n) { printf("cannot read %s\n", argv[8]); return 2; }
            fclose(f);
        }
        GlipDetection out[8];
        uint32_t count = 0;
        int r = glip_detector_detect_rgb(det, rgb, w, h, out, 8, &count);
        if (rgb != small) free(rgb);
        if (r != 0) { r = fail("detect"); glip_detector_free(det); return r; }
        printf("count %u\n", count);
    }
    glip_detector_free(det);
    glip_detector_free(NULL);
    printf("ok\n");
    return 0;
}
