/* Scratch memory for the convolution kernels, with the last few large blocks kept for
 * the next call instead of returned to the system.
 *
 * A kernel call allocates its scratch (slabs, im2col tiles, partial gradients) and frees
 * it on return.  glibc serves a block of more than its mmap threshold from fresh pages,
 * and may hand the pages of a freed one back, so that the next call of the same layer
 * faults every page in again: the channels-last weight gradient of a 512-channel 7x7
 * layer (a 9 MiB partial) ran 8.5 ms a call that way on the AVX-512 Xeon, 3.6 ms with
 * its blocks reused.  Whether glibc reuses them depends on what else the process
 * allocated, so a benchmark's numbers would too.
 *
 * ck_scratch_alloc returns n bytes (zeroed when asked) on a 64-byte line: the cached
 * block of the smallest capacity that holds n, if it is at most 2n (a small request
 * does not take a large block that the next large one would need), or a new one.  ck_scratch_free
 * keeps a block of at least CK_CACHE_MIN_BYTES while the cache has a slot and stays
 * within CK_CACHE_MAX_BYTES, evicting its smallest blocks when that makes room, and
 * frees it otherwise.  A block's capacity sits in the 64 bytes before it.  A mutex
 * guards the slots (calls from several Python threads, with or without the GIL).
 */
#ifndef CONVKERN_SCRATCH_CACHE_H
#define CONVKERN_SCRATCH_CACHE_H

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define CK_CACHE_SLOTS 16
#define CK_CACHE_MIN_BYTES ((size_t)256 << 10)
#define CK_CACHE_MAX_BYTES ((size_t)256 << 20)
#define CK_CACHE_HEADER 64

static void *ck_cache_block[CK_CACHE_SLOTS];
static size_t ck_cache_cap[CK_CACHE_SLOTS];
static size_t ck_cache_total;
static pthread_mutex_t ck_cache_lock = PTHREAD_MUTEX_INITIALIZER;

static size_t ck_scratch_capacity(void *p)
{
    size_t cap;
    memcpy(&cap, (char *)p - CK_CACHE_HEADER, sizeof cap);
    return cap;
}

/* n bytes (at least 1) on a 64-byte line, zeroed if zero; NULL when out of memory */
static void *ck_scratch_alloc(size_t n, int zero)
{
    void *p = NULL, *raw = NULL;
    int i, best = -1;
    if (n == 0)
        n = 1;
    pthread_mutex_lock(&ck_cache_lock);
    for (i = 0; i < CK_CACHE_SLOTS; i++)
        if (ck_cache_block[i] != NULL && ck_cache_cap[i] >= n && ck_cache_cap[i] / 2 <= n
                && (best < 0 || ck_cache_cap[i] < ck_cache_cap[best]))
            best = i;
    if (best >= 0) {
        p = ck_cache_block[best];
        ck_cache_block[best] = NULL;
        ck_cache_total -= ck_cache_cap[best];
    }
    pthread_mutex_unlock(&ck_cache_lock);
    if (p == NULL) {
        if (n > (size_t)-1 - CK_CACHE_HEADER
                || posix_memalign(&raw, 64, n + CK_CACHE_HEADER) != 0)
            return NULL;
        p = (char *)raw + CK_CACHE_HEADER;
        memcpy((char *)p - CK_CACHE_HEADER, &n, sizeof n);
    }
    if (zero)
        memset(p, 0, n);
    return p;
}

static void ck_scratch_free(void *p)
{
    size_t cap;
    int i, slot = -1;
    if (p == NULL)
        return;
    cap = ck_scratch_capacity(p);
    if (cap >= CK_CACHE_MIN_BYTES && cap <= CK_CACHE_MAX_BYTES) {
        pthread_mutex_lock(&ck_cache_lock);
        /* evict the smallest blocks, smaller than this one, until it fits */
        for (;;) {
            int small = -1, empty = -1;
            for (i = 0; i < CK_CACHE_SLOTS; i++) {
                if (ck_cache_block[i] == NULL)
                    empty = empty < 0 ? i : empty;
                else if (small < 0 || ck_cache_cap[i] < ck_cache_cap[small])
                    small = i;
            }
            if (empty >= 0 && ck_cache_total + cap <= CK_CACHE_MAX_BYTES) {
                slot = empty;
                break;
            }
            if (small < 0 || ck_cache_cap[small] >= cap)
                break;
            free((char *)ck_cache_block[small] - CK_CACHE_HEADER);
            ck_cache_total -= ck_cache_cap[small];
            ck_cache_block[small] = NULL;
        }
        if (slot >= 0) {
            ck_cache_block[slot] = p;
            ck_cache_cap[slot] = cap;
            ck_cache_total += cap;
        }
        pthread_mutex_unlock(&ck_cache_lock);
        if (slot >= 0)
            return;
    }
    free((char *)p - CK_CACHE_HEADER);
}

/* Free every cached block (for tests and for callers that want the memory back). */
static void ck_scratch_release_cache(void)
{
    int i;
    pthread_mutex_lock(&ck_cache_lock);
    for (i = 0; i < CK_CACHE_SLOTS; i++) {
        if (ck_cache_block[i] != NULL)
            free((char *)ck_cache_block[i] - CK_CACHE_HEADER);
        ck_cache_block[i] = NULL;
    }
    ck_cache_total = 0;
    pthread_mutex_unlock(&ck_cache_lock);
}

#endif
