// The call queue shared by addon.c (the JS thread pushes) and addon.go (one
// goroutine pops): see js_call in addon.c.
#ifndef MESHGUARD_ADDON_H
#define MESHGUARD_ADDON_H

typedef struct mg_call {
  long long id;
  char* method;
  char* params;
  struct mg_call* next;
} mg_call;

mg_call* mg_next_call(void);
void mg_free_call(mg_call* c);

#endif
