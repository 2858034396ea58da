// A stand-in for NVIDIA's driver library (libcuda.so.1) that lets `train.backend = "cuda"` run
// its whole host side on a machine without a GPU: CubeCL initialises against an H100's
// properties, compiles every kernel a step launches through the real NVRTC (CUDA C++ -> PTX for
// sm_90a, with the real CUDA headers), allocates, copies and "launches" -- but no kernel runs,
// so every number the run computes is meaningless (buffers hold zeros or what the host wrote).
//
// What it is for (bench/fake_cuda.sh):
//   - NVRTC refusing a kernel (ours or burn's) shows here, not in the first minutes of a device call;
//   - the launches of one optimizer step are counted by kernel name;
//   - the host's time per step with launches that cost nothing: what the step cannot go below on a
//     real GPU, given a core for each of the step's threads (on 2 cores they spin on each other).
//
// No crate offers this (a fake CUDA driver); it is small enough to write by hand. Only the entry
// points cudarc and CubeCL's CUDA runtime call are here; cudarc loads symbols lazily, so one
// that is missing panics with its name ("Missing symbol cuX").
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef void *CUcontext;
typedef void *CUstream;
typedef void *CUevent;
typedef void *CUmodule;
typedef void *CUfunction;

enum {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_NOT_FOUND = 500,
    CUDA_ERROR_NOT_SUPPORTED = 801,
};

static const char *DEVICE_NAME = "NVIDIA H100 80GB HBM3";
static const size_t TOTAL_MEM = 80ull << 30;
static const size_t HEADER = 4096;

// ---- counters, reported at exit ----------------------------------------------------------------

#define MAX_FUNCS 8192
struct func {
    char name[256];
    atomic_ullong launches;
};
static struct func funcs[MAX_FUNCS];
static atomic_int n_funcs;
static atomic_ullong n_launches, n_modules, n_htod, n_dtoh, n_dtod, n_alloc, n_sync, bytes_dtoh;
static atomic_ullong ptx_bytes;

static int cmp_launches(const void *a, const void *b) {
    unsigned long long x = ((const struct func *)a)->launches, y = ((const struct func *)b)->launches;
    return x < y ? 1 : x > y ? -1 : 0;
}

__attribute__((destructor)) static void report(void) {
    const char *path = getenv("FAKE_CUDA_REPORT");
    if (!path) return;
    FILE *f = fopen(path, "w");
    if (!f) return;
    int n = atomic_load(&n_funcs);
    fprintf(f, "{\"modules\": %llu, \"ptx_bytes\": %llu, \"launches\": %llu, \"htod\": %llu, "
               "\"dtoh\": %llu, \"dtoh_bytes\": %llu, \"dtod\": %llu, \"allocs\": %llu, "
               "\"syncs\": %llu, \"kernels\": [",
            (unsigned long long)n_modules, (unsigned long long)ptx_bytes,
            (unsigned long long)n_launches, (unsigned long long)n_htod,
            (unsigned long long)n_dtoh, (unsigned long long)bytes_dtoh,
            (unsigned long long)n_dtod, (unsigned long long)n_alloc, (unsigned long long)n_sync);
    qsort(funcs, n, sizeof(struct func), cmp_launches);
    for (int i = 0; i < n; i++)
        fprintf(f, "%s\n  [\"%s\", %llu]", i ? "," : "", funcs[i].name,
                (unsigned long long)funcs[i].launches);
    fprintf(f, "]}\n");
    fclose(f);
}

// ---- device and context ------------------------------------------------------------------------

CUresult cuInit(unsigned flags) { (void)flags; return CUDA_SUCCESS; }
CUresult cuDriverGetVersion(int *v) { *v = 13000; return CUDA_SUCCESS; }
CUresult cuDeviceGetCount(int *n) { *n = 1; return CUDA_SUCCESS; }
CUresult cuDeviceGet(CUdevice *d, int ordinal) {
    if (ordinal != 0) return CUDA_ERROR_INVALID_VALUE;
    *d = 0;
    return CUDA_SUCCESS;
}
CUresult cuDeviceGetName(char *name, int len, CUdevice d) {
    (void)d;
    snprintf(name, len, "%s", DEVICE_NAME);
    return CUDA_SUCCESS;
}
CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice d) { (void)d; *bytes = TOTAL_MEM; return CUDA_SUCCESS; }
CUresult cuDeviceGetPCIBusId(char *id, int len, CUdevice d) {
    (void)d;
    snprintf(id, len, "0000:00:00.0");
    return CUDA_SUCCESS;
}
CUresult cuDeviceGetLuid(char *luid, unsigned *mask, CUdevice d) {
    (void)luid; (void)mask; (void)d;
    return CUDA_ERROR_NOT_SUPPORTED;  // as on Linux
}
CUresult cuDeviceGetUuid(unsigned char *uuid, CUdevice d) { (void)d; memset(uuid, 0x42, 16); return CUDA_SUCCESS; }
CUresult cuDeviceGetUuid_v2(unsigned char *uuid, CUdevice d) { return cuDeviceGetUuid(uuid, d); }

// An H100 SXM's answers (CUDA's deviceQuery on one); 0 for what CubeCL does not ask.
CUresult cuDeviceGetAttribute(int *v, int attribute, CUdevice d) {
    (void)d;
    switch (attribute) {
    case 1: *v = 1024; break;             // MAX_THREADS_PER_BLOCK
    case 2: case 3: *v = 1024; break;     // MAX_BLOCK_DIM_X, _Y
    case 4: *v = 64; break;               // MAX_BLOCK_DIM_Z
    case 5: *v = 2147483647; break;       // MAX_GRID_DIM_X
    case 6: case 7: *v = 65535; break;    // MAX_GRID_DIM_Y, _Z
    case 8: *v = 49152; break;            // MAX_SHARED_MEMORY_PER_BLOCK
    case 10: *v = 32; break;              // WARP_SIZE
    case 12: *v = 65536; break;           // MAX_REGISTERS_PER_BLOCK
    case 13: *v = 1980000; break;         // CLOCK_RATE (kHz)
    case 16: *v = 132; break;             // MULTIPROCESSOR_COUNT
    case 39: *v = 2048; break;            // MAX_THREADS_PER_MULTIPROCESSOR
    case 75: *v = 9; break;               // COMPUTE_CAPABILITY_MAJOR
    case 76: *v = 0; break;               // COMPUTE_CAPABILITY_MINOR
    case 81: *v = 233472; break;          // MAX_SHARED_MEMORY_PER_MULTIPROCESSOR
    case 97: *v = 232448; break;          // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
    default: *v = 0; break;
    }
    return CUDA_SUCCESS;
}

static int the_context;
CUresult cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d) { (void)d; *c = &the_context; return CUDA_SUCCESS; }
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) { (void)d; return CUDA_SUCCESS; }
CUresult cuCtxSetCurrent(CUcontext c) { (void)c; return CUDA_SUCCESS; }
CUresult cuCtxGetCurrent(CUcontext *c) { *c = &the_context; return CUDA_SUCCESS; }
CUresult cuCtxPushCurrent_v2(CUcontext c) { (void)c; return CUDA_SUCCESS; }
CUresult cuCtxPopCurrent_v2(CUcontext *c) { if (c) *c = &the_context; return CUDA_SUCCESS; }
CUresult cuCtxSynchronize(void) { n_sync++; return CUDA_SUCCESS; }
CUresult cuCtxGetStreamPriorityRange(int *least, int *greatest) { *least = 0; *greatest = -5; return CUDA_SUCCESS; }
CUresult cuCtxSetLimit(int limit, size_t value) { (void)limit; (void)value; return CUDA_SUCCESS; }
CUresult cuCtxGetLimit(size_t *value, int limit) { (void)limit; *value = 0; return CUDA_SUCCESS; }

// NVRTC opens libcuda.so.1 itself and asks it for a private table (its compile cache); refusing
// is what a driver without one answers. (Without this symbol NVRTC 13.0 dereferences NULL.)
CUresult cuGetExportTable(const void **table, const void *id) { (void)id; *table = NULL; return CUDA_ERROR_NOT_SUPPORTED; }

CUresult cuGetErrorString(CUresult e, const char **s) {
    *s = e == 0 ? "no error" : "an error of the fake CUDA driver (bench/fake_cuda)";
    return CUDA_SUCCESS;
}
CUresult cuGetErrorName(CUresult e, const char **s) {
    *s = e == 0 ? "CUDA_SUCCESS" : "CUDA_ERROR_FAKE";
    return CUDA_SUCCESS;
}

// ---- streams and events: everything happens at once, so all of them are already done ----------

static atomic_int handles;
static void *new_handle(void) {
    int *h = malloc(sizeof(int));
    *h = atomic_fetch_add(&handles, 1);
    return h;
}
CUresult cuStreamCreate(CUstream *s, unsigned flags) { (void)flags; *s = new_handle(); return CUDA_SUCCESS; }
CUresult cuStreamCreateWithPriority(CUstream *s, unsigned flags, int p) { (void)p; return cuStreamCreate(s, flags); }
CUresult cuStreamDestroy_v2(CUstream s) { free(s); return CUDA_SUCCESS; }
CUresult cuStreamSynchronize(CUstream s) { (void)s; n_sync++; return CUDA_SUCCESS; }
CUresult cuStreamWaitEvent(CUstream s, CUevent e, unsigned f) { (void)s; (void)e; (void)f; return CUDA_SUCCESS; }
CUresult cuStreamQuery(CUstream s) { (void)s; return CUDA_SUCCESS; }

struct event { struct timespec at; };
CUresult cuEventCreate(CUevent *e, unsigned flags) { (void)flags; *e = calloc(1, sizeof(struct event)); return CUDA_SUCCESS; }
CUresult cuEventDestroy_v2(CUevent e) { free(e); return CUDA_SUCCESS; }
CUresult cuEventRecord(CUevent e, CUstream s) {
    (void)s;
    clock_gettime(CLOCK_MONOTONIC, &((struct event *)e)->at);
    return CUDA_SUCCESS;
}
CUresult cuEventSynchronize(CUevent e) { (void)e; n_sync++; return CUDA_SUCCESS; }
CUresult cuEventQuery(CUevent e) { (void)e; return CUDA_SUCCESS; }
// The host time between the two records: autotune then ranks candidates by how long the host
// took to launch them, which is as good as any order when no kernel runs.
CUresult cuEventElapsedTime(float *ms, CUevent a, CUevent b) {
    struct timespec *x = &((struct event *)a)->at, *y = &((struct event *)b)->at;
    *ms = (float)((y->tv_sec - x->tv_sec) * 1e3 + (y->tv_nsec - x->tv_nsec) / 1e6);
    if (*ms <= 0) *ms = 1e-3f;
    return CUDA_SUCCESS;
}
CUresult cuEventElapsedTime_v2(float *ms, CUevent a, CUevent b) { return cuEventElapsedTime(ms, a, b); }

// ---- memory: host pages standing for device memory ---------------------------------------------
// Reserved, not committed (MAP_NORESERVE): no kernel writes, so only the pages the host copies
// into or out of are ever backed, and BERT-base's gigabytes of activations cost nothing.

static CUresult alloc(CUdeviceptr *p, size_t size) {
    void *m = mmap(NULL, size + HEADER, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
    *(size_t *)m = size;
    *p = (CUdeviceptr)((char *)m + HEADER);
    n_alloc++;
    return CUDA_SUCCESS;
}
static CUresult release(CUdeviceptr p) {
    if (!p) return CUDA_SUCCESS;
    char *m = (char *)p - HEADER;
    munmap(m, *(size_t *)m + HEADER);
    return CUDA_SUCCESS;
}
CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t size) { return alloc(p, size); }
CUresult cuMemAllocAsync(CUdeviceptr *p, size_t size, CUstream s) { (void)s; return alloc(p, size); }
CUresult cuMemFree_v2(CUdeviceptr p) { return release(p); }
CUresult cuMemFreeAsync(CUdeviceptr p, CUstream s) { (void)s; return release(p); }
CUresult cuMemAllocHost_v2(void **p, size_t size) { *p = malloc(size ? size : 1); return *p ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY; }
CUresult cuMemHostAlloc(void **p, size_t size, unsigned flags) { (void)flags; return cuMemAllocHost_v2(p, size); }
CUresult cuMemFreeHost(void *p) { free(p); return CUDA_SUCCESS; }
CUresult cuMemGetInfo_v2(size_t *free_, size_t *total) { *free_ = TOTAL_MEM; *total = TOTAL_MEM; return CUDA_SUCCESS; }

CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void *h, size_t n, CUstream s) {
    (void)s; n_htod++; memcpy((void *)d, h, n); return CUDA_SUCCESS;
}
CUresult cuMemcpyHtoD_v2(CUdeviceptr d, const void *h, size_t n) { return cuMemcpyHtoDAsync_v2(d, h, n, NULL); }
CUresult cuMemcpyDtoHAsync_v2(void *h, CUdeviceptr d, size_t n, CUstream s) {
    (void)s; n_dtoh++; bytes_dtoh += n; memcpy(h, (const void *)d, n); return CUDA_SUCCESS;
}
CUresult cuMemcpyDtoH_v2(void *h, CUdeviceptr d, size_t n) { return cuMemcpyDtoHAsync_v2(h, d, n, NULL); }
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr a, CUdeviceptr b, size_t n, CUstream s) {
    (void)s; n_dtod++; memmove((void *)a, (const void *)b, n); return CUDA_SUCCESS;
}
CUresult cuMemcpyDtoD_v2(CUdeviceptr a, CUdeviceptr b, size_t n) { return cuMemcpyDtoDAsync_v2(a, b, n, NULL); }
CUresult cuMemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, CUstream s) { (void)s; memset((void *)d, v, n); return CUDA_SUCCESS; }
CUresult cuMemsetD8_v2(CUdeviceptr d, unsigned char v, size_t n) { memset((void *)d, v, n); return CUDA_SUCCESS; }

// CUDA_MEMCPY2D (cuda.h): host and device pointers are both host addresses here.
typedef struct {
    size_t srcXInBytes, srcY;
    int srcMemoryType;
    const void *srcHost;
    CUdeviceptr srcDevice;
    void *srcArray;
    size_t srcPitch;
    size_t dstXInBytes, dstY;
    int dstMemoryType;
    void *dstHost;
    CUdeviceptr dstDevice;
    void *dstArray;
    size_t dstPitch;
    size_t WidthInBytes, Height;
} CUDA_MEMCPY2D;
CUresult cuMemcpy2DAsync_v2(const CUDA_MEMCPY2D *c, CUstream s) {
    (void)s;
    const char *src = c->srcMemoryType == 1 ? c->srcHost : (const char *)c->srcDevice;
    char *dst = c->dstMemoryType == 1 ? c->dstHost : (char *)c->dstDevice;
    if (c->srcMemoryType == 1) n_htod++; else if (c->dstMemoryType == 1) n_dtoh++; else n_dtod++;
    src += c->srcY * c->srcPitch + c->srcXInBytes;
    dst += c->dstY * c->dstPitch + c->dstXInBytes;
    for (size_t r = 0; r < c->Height; r++)
        memcpy(dst + r * c->dstPitch, src + r * c->srcPitch, c->WidthInBytes);
    return CUDA_SUCCESS;
}

// ---- modules and launches ----------------------------------------------------------------------

CUresult cuModuleLoadData(CUmodule *m, const void *image) {
    n_modules++;
    ptx_bytes += strlen(image);
    const char *dir = getenv("FAKE_CUDA_PTX_DIR");
    if (dir) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%05llu.ptx", dir, (unsigned long long)n_modules);
        FILE *f = fopen(path, "w");
        if (f) { fputs(image, f); fclose(f); }
    }
    *m = new_handle();
    return CUDA_SUCCESS;
}
CUresult cuModuleUnload(CUmodule m) { (void)m; return CUDA_SUCCESS; }

static pthread_mutex_t funcs_lock = PTHREAD_MUTEX_INITIALIZER;
CUresult cuModuleGetFunction(CUfunction *f, CUmodule m, const char *name) {
    (void)m;
    pthread_mutex_lock(&funcs_lock);
    int n = atomic_load(&n_funcs), i;
    for (i = 0; i < n; i++)
        if (strncmp(funcs[i].name, name, sizeof funcs[i].name - 1) == 0) break;
    if (i == n && n < MAX_FUNCS) {
        snprintf(funcs[n].name, sizeof funcs[n].name, "%s", name);
        atomic_store(&n_funcs, n + 1);
    }
    pthread_mutex_unlock(&funcs_lock);
    *f = i < MAX_FUNCS ? &funcs[i] : NULL;
    return CUDA_SUCCESS;
}
CUresult cuFuncSetAttribute(CUfunction f, int a, int v) { (void)f; (void)a; (void)v; return CUDA_SUCCESS; }
CUresult cuFuncGetAttribute(int *v, int a, CUfunction f) {
    (void)f;
    *v = a == 0 ? 1024 : 0;  // MAX_THREADS_PER_BLOCK
    return CUDA_SUCCESS;
}
CUresult cuFuncSetCacheConfig(CUfunction f, int c) { (void)f; (void)c; return CUDA_SUCCESS; }

CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                        unsigned by, unsigned bz, unsigned smem, CUstream s, void **params,
                        void **extra) {
    (void)gx; (void)gy; (void)gz; (void)bx; (void)by; (void)bz; (void)smem; (void)s;
    (void)params; (void)extra;
    n_launches++;
    if (f) ((struct func *)f)->launches++;
    return CUDA_SUCCESS;
}
CUresult cuLaunchKernelEx(const void *config, CUfunction f, void **params, void **extra) {
    (void)config;
    return cuLaunchKernel(f, 0, 0, 0, 0, 0, 0, 0, NULL, params, extra);
}

// TMA descriptors: 128 opaque bytes no kernel reads here.
CUresult cuTensorMapEncodeTiled(void *map, ...) { memset(map, 0, 128); return CUDA_SUCCESS; }
CUresult cuTensorMapEncodeIm2col(void *map, ...) { memset(map, 0, 128); return CUDA_SUCCESS; }
CUresult cuTensorMapEncodeIm2colWide(void *map, ...) { memset(map, 0, 128); return CUDA_SUCCESS; }
