/* C ABI driver for frames and threads (tests/capi.rs).
 *
 *   frames detect CONFIG WEIGHTS BERT PROMPT FORMAT WIDTH HEIGHT PACKEDFILE PAD
 *     Reads a packed frame of FORMAT (rgb24 bgr24 rgba bgra gray nv12 yuv420p), lays each
 *     plane out at its row + PAD bytes per row (padding 0xEE, so a reader that ignores the
 *     stride sees garbage), detects with glip_detector_detect_frame and prints
 *     "det LABEL SCORE X1 Y1 X2 Y2" lines (%.9g: exact floats), then what
 *     glip_detector_detect_cuda says on the same host frame ("cuda STATUS MESSAGE").
 *
 *   frames threads ROUNDS BERT [CONFIG WEIGHTS PROMPT RGBFILE WIDTH HEIGHT] x2
 *     Two detectors; each detects its RGB24 frame once alone, then both detect ROUNDS times
 *     at once on two threads, each thread also failing a call of its own kind on the way:
 *     every result must equal the one alone, and each thread's glip_last_error its own.
 *     Prints "threads ok N1 N2". */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "glip.h"

#define CAP 128

static int format_of(const char* s, uint32_t* f) {
    const char* names[] = {"rgb24", "bgr24", "rgba", "bgra", "gray", "nv12", "yuv420p"};
    const uint32_t codes[] = {GLIP_PIXEL_FORMAT_RGB24, GLIP_PIXEL_FORMAT_BGR24,
                              GLIP_PIXEL_FORMAT_RGBA,  GLIP_PIXEL_FORMAT_BGRA,
                              GLIP_PIXEL_FORMAT_GRAY8, GLIP_PIXEL_FORMAT_NV12,
                              GLIP_PIXEL_FORMAT_I420};
    for (int i = 0; i < 7; i++)
        if (strcmp(s, names[i]) == 0) { *f = codes[i]; return 0; }
    return -1;
}

/* Each plane's packed row bytes and rows. Returns the number of planes. */
static int layout(uint32_t f, size_t w, size_t h, size_t row[3], size_t rows[3]) {
    size_t cw = (w + 1) / 2, ch = (h + 1) / 2;
    switch (f) {
    case GLIP_PIXEL_FORMAT_RGB24: case GLIP_PIXEL_FORMAT_BGR24: row[0] = 3 * w; rows[0] = h; return 1;
    case GLIP_PIXEL_FORMAT_RGBA: case GLIP_PIXEL_FORMAT_BGRA: row[0] = 4 * w; rows[0] = h; return 1;
    case GLIP_PIXEL_FORMAT_GRAY8: row[0] = w; rows[0] = h; return 1;
    case GLIP_PIXEL_FORMAT_NV12: row[0] = w; rows[0] = h; row[1] = 2 * cw; rows[1] = ch; return 2;
    default: row[0] = w; rows[0] = h; row[1] = row[2] = cw; rows[1] = rows[2] = ch; return 3;
    }
}

static uint8_t* read_file(const char* path, size_t n) {
    uint8_t* b = malloc(n ? n : 1);
    FILE* f = fopen(path, "rb");
    if (!b || !f || fread(b, 1, n, f) != n) { fprintf(stderr, "cannot read %zu bytes of %s\n", n, path); exit(2); }
    fclose(f);
    return b;
}

static GlipDetector* make(const char* config, const char* weights, const char* bert, const char* prompt) {
    GlipDetector* d = glip_detector_new_on(config, weights, bert, NULL, "cpu");
    if (!d) { fprintf(stderr, "new: %d %s\n", (int)glip_last_error_code(), glip_last_error()); exit(4); }
    if (glip_detector_set_prompt(d, prompt) != GLIP_STATUS_OK) { fprintf(stderr, "prompt: %s\n", glip_last_error()); exit(5); }
    return d;
}

static int detect(int argc, char** argv) {
    if (argc != 11) { fprintf(stderr, "usage: detect CONFIG WEIGHTS BERT PROMPT FORMAT W H FILE PAD\n"); return 2; }
    GlipDetector* det = make(argv[2], argv[3], argv[4], argv[5]);
    uint32_t f;
    if (format_of(argv[6], &f) != 0) { fprintf(stderr, "unknown format %s\n", argv[6]); return 2; }
    size_t w = strtoul(argv[7], NULL, 10), h = strtoul(argv[8], NULL, 10), pad = strtoul(argv[10], NULL, 10);
    size_t row[3], rows[3], total = 0;
    int n = layout(f, w, h, row, rows);
    for (int i = 0; i < n; i++) total += row[i] * rows[i];
    uint8_t* packed = read_file(argv[9], total);
    GlipFrame frame = {f, (uint32_t)w, (uint32_t)h, {NULL, NULL, NULL}, {0, 0, 0}};
    uint8_t* planes[3] = {NULL, NULL, NULL};
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        size_t stride = row[i] + pad;
        planes[i] = malloc(stride * rows[i]);
        memset(planes[i], 0xEE, stride * rows[i]);
        for (size_t r = 0; r < rows[i]; r++, at += row[i]) memcpy(planes[i] + r * stride, packed + at, row[i]);
        frame.planes[i] = planes[i];
        frame.strides[i] = pad ? (uint32_t)stride : 0; /* 0: packed */
    }
    GlipDetection out[CAP];
    uint32_t count = 0;
    GlipStatus st = glip_detector_detect_frame(det, &frame, out, CAP, &count);
    if (st != GLIP_STATUS_OK) { printf("error %d %s\n", (int)st, glip_last_error()); return 1; }
    printf("count %u\n", count);
    for (uint32_t i = 0; i < count && i < CAP; i++)
        printf("det %u %.9g %.9g %.9g %.9g %.9g\n", out[i].label, out[i].score, out[i].x1, out[i].y1, out[i].x2, out[i].y2);
    st = glip_detector_detect_cuda(det, &frame, NULL, out, CAP, &count);
    printf("cuda %d %s\n", (int)st, st == GLIP_STATUS_OK ? "" : glip_last_error());
    for (int i = 0; i < n; i++) free(planes[i]);
    free(packed);
    glip_detector_free(det);
    return 0;
}

typedef struct {
    GlipDetector* det;
    const uint8_t* rgb;
    uint32_t w, h, rounds, alone_count, which;
    GlipDetection alone[CAP];
    int ok;
    char why[256];
} Job;

static int same(const Job* j, const GlipDetection* out, uint32_t count) {
    return count == j->alone_count && memcmp(out, j->alone, sizeof(GlipDetection) * (count < CAP ? count : CAP)) == 0;
}

static void* worker(void* p) {
    Job* j = p;
    GlipDetection out[CAP];
    uint32_t count;
    j->ok = 1;
    for (uint32_t r = 0; r < j->rounds; r++) {
        /* A failure of this thread's own kind: thread 0 a NULL frame, thread 1 a zero width. */
        if (j->which == 0) glip_detector_detect_frame(j->det, NULL, out, CAP, &count);
        else glip_detector_detect_rgb(j->det, j->rgb, 0, j->h, out, CAP, &count);
        if (glip_detector_detect_rgb(j->det, j->rgb, j->w, j->h, out, CAP, &count) != GLIP_STATUS_OK || !same(j, out, count)) {
            j->ok = 0;
            snprintf(j->why, sizeof j->why, "round %u: %s", r, glip_last_error());
            return NULL;
        }
    }
    const char* want = j->which == 0 ? "frame is NULL" : "both sides";
    if (!strstr(glip_last_error(), want)) {
        j->ok = 0;
        snprintf(j->why, sizeof j->why, "last error \"%s\" is not this thread's (%s)", glip_last_error(), want);
    }
    return NULL;
}

static int threads(int argc, char** argv) {
    if (argc != 4 + 12) { fprintf(stderr, "usage: threads ROUNDS BERT (CONFIG WEIGHTS PROMPT RGB W H) x2\n"); return 2; }
    uint32_t rounds = (uint32_t)strtoul(argv[2], NULL, 10);
    Job jobs[2];
    for (int k = 0; k < 2; k++) {
        char** a = argv + 4 + 6 * k;
        Job* j = &jobs[k];
        memset(j, 0, sizeof *j);
        j->det = make(a[0], a[1], argv[3], a[2]);
        j->w = (uint32_t)strtoul(a[4], NULL, 10);
        j->h = (uint32_t)strtoul(a[5], NULL, 10);
        j->rgb = read_file(a[3], (size_t)j->w * j->h * 3);
        j->rounds = rounds;
        j->which = (uint32_t)k;
        if (glip_detector_detect_rgb(j->det, j->rgb, j->w, j->h, j->alone, CAP, &j->alone_count) != GLIP_STATUS_OK) {
            fprintf(stderr, "alone: %s\n", glip_last_error());
            return 6;
        }
    }
    pthread_t t[2];
    for (int k = 0; k < 2; k++) pthread_create(&t[k], NULL, worker, &jobs[k]);
    for (int k = 0; k < 2; k++) pthread_join(t[k], NULL);
    int ok = 1;
    for (int k = 0; k < 2; k++) {
        if (!jobs[k].ok) { printf("thread %d: %s\n", k, jobs[k].why); ok = 0; }
        glip_detector_free(jobs[k].det);
        free((void*)jobs[k].rgb);
    }
    if (ok) printf("threads ok %u %u\n", jobs[0].alone_count, jobs[1].alone_count);
    return ok ? 0 : 1;
}

int main(int argc, char** argv) {
    if (argc > 1 && strcmp(argv[1], "detect") == 0) return detect(argc, argv);
    if (argc > 1 && strcmp(argv[1], "threads") == 0) return threads(argc, argv);
    fprintf(stderr, "usage: frames detect ... | frames threads ...\n");
    return 2;
}
