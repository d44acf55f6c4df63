// Resident code pages of the addon (docs/core.md, "Memory").
//
// Loading the addon leaves nearly all of its read-only segments resident:
// the dynamic linker reads the 2.5 MB relocation table once, and the
// kernel maps the pages around every page fault from the page cache
// ("fault-around"), so the Go runtime's start-up walks over the function
// table and the code run while loading bring in far more text and pclntab
// than the process uses afterwards. mg_release_pages drops those clean pages
// from this process's page tables once the runtime has started (they stay
// in the page cache, shared): a page the process touches again is mapped
// back from there, on demand. Only segments that are never written are
// touched: text and read-only data; the relocated (RELRO) and writable
// segments keep their contents.
// Linux only: elsewhere (macOS) mg_release_pages does nothing.
void mg_release_pages(void);

#if defined(__linux__)
#define _GNU_SOURCE
#include <link.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct mg_self {
  uintptr_t addr;  // an address inside this object
  size_t released; // bytes released
};

static int mg_release_cb(struct dl_phdr_info* info, size_t size, void* data) {
  (void)size;
  struct mg_self* self = data;
  int mine = 0;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr)* ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_LOAD) continue;
    uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
    if (self->addr >= lo && self->addr < lo + ph->p_memsz) mine = 1;
  }
  if (!mine) return 0;
  uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr)* ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_LOAD || (ph->p_flags & PF_W)) continue;
    // Whole pages inside the segment only: a page shared with a writable
    // neighbour keeps its contents.
    uintptr_t lo = (info->dlpi_addr + ph->p_vaddr + page - 1) & ~(page - 1);
    uintptr_t hi = (info->dlpi_addr + ph->p_vaddr + ph->p_filesz) & ~(page - 1);
    if (hi <= lo) continue;
    if (madvise((void*)lo, hi - lo, MADV_DONTNEED) == 0) self->released += hi - lo;
  }
  return 1;
}

void mg_release_pages(void) {
  const char* keep = getenv("MESHGUARD_KEEP_PAGES");
  if (keep != NULL && strcmp(keep, "1") == 0) return;
  struct mg_self self = {(uintptr_t)&mg_release_pages, 0};
  dl_iterate_phdr(mg_release_cb, &self);
}
#else
void mg_release_pages(void) {}
#endif
