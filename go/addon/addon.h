// Shared between addon.c and the cgo side of the addon.
#ifndef MESHGUARD_ADDON_H
#define MESHGUARD_ADDON_H

// mg_req is one queued call(id, method, params): the strings are malloc'd copies.
typedef struct mg_req {
  struct mg_req* next;
  long long id;
  char* method;
  char* params;
} mg_req;

mg_req* mg_pop(void);
void mg_free_req(mg_req* r);

#endif
