/* Software prefetch of a block of a matrix's rows ahead of its use: a kernel that packs
 * a weight one KC x nr block at a time (each block short runs of many rows, too short
 * for the hardware's stream prefetchers) asks for the next block while the product
 * runs over this one.  A hint only: it changes no value.  Lines go to the L2 cache
 * (locality 2, prefetcht1 on x86), not to the L1 that the product is using.
 */
#ifndef CONVKERN_PREFETCH_H
#define CONVKERN_PREFETCH_H

#include <stdint.h>
#include <Python.h>

/* Every 64-byte line of rows runs of `bytes` bytes starting at p, p + stride, ... */
static inline void ck_prefetch_rows(const void *p, Py_ssize_t stride, Py_ssize_t rows,
                                    Py_ssize_t bytes)
{
#if defined(__GNUC__) || defined(__clang__)
    Py_ssize_t r;
    uintptr_t line, last;
    if (bytes <= 0)
        return;
    for (r = 0; r < rows; r++) {
        line = ((uintptr_t)p + (uintptr_t)(r * stride)) & ~(uintptr_t)63;
        last = ((uintptr_t)p + (uintptr_t)(r * stride + bytes - 1)) & ~(uintptr_t)63;
        for (; line <= last; line += 64)
            __builtin_prefetch((const void *)line, 0, 2);
    }
#else
    (void)p; (void)stride; (void)rows; (void)bytes;
#endif
}

#endif
