/* bcryptprimitives.dll for Wine before 8.13, which lacks it: Rust's std (1.78 and later) and
 * getrandom import ProcessPrng from it, and without it every Rust program exits 53 at load.
 * ProcessPrng fills a buffer with random bytes and always succeeds; RtlGenRandom
 * (SystemFunction036 in advapi32) does the same. Built by scripts/wine.sh, for the tests only. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
