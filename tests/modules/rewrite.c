/* A second module for tests/capture.rs: its command filter rewrites every XADD argument
 * "before" into "after", as a module loaded after HeatBridge could. HeatBridge's filter runs
 * first and sees "before"; the stream holds "after". Built by the test with `cc -shared`.
 * Self-contained: it fetches the few module API functions it needs itself, as
 * RedisModule_Init does in redismodule.h. */
#include <stddef.h>
#include <string.h>
#include <strings.h>

typedef struct Ctx Ctx;
typedef struct Str Str;
typedef struct FilterCtx FilterCtx;
typedef void (*FilterFunc)(FilterCtx *fctx);

static int (*GetApi)(const char *, void *);
static void (*SetModuleAttribs)(Ctx *, const char *, int, int);
static void *(*RegisterCommandFilter)(Ctx *, FilterFunc, int);
static int (*FilterArgsCount)(FilterCtx *);
static Str *(*FilterArgGet)(FilterCtx *, int);
static int (*FilterArgReplace)(FilterCtx *, int, Str *);
static const char *(*StringPtrLen)(const Str *, size_t *);
static Str *(*CreateString)(Ctx *, const char *, size_t);

static int is(Str *s, const char *want) {
    size_t len = 0;
    const char *p = StringPtrLen(s, &len);
    return len == strlen(want) && strncasecmp(p, want, len) == 0;
}

static void rewrite(FilterCtx *fctx) {
    int argc = FilterArgsCount(fctx);
    if (argc < 1 || !is(FilterArgGet(fctx, 0), "xadd")) return;
    for (int i = 2; i < argc; i++) {
        if (is(FilterArgGet(fctx, i), "before")) {
            FilterArgReplace(fctx, i, CreateString(NULL, "after", 5));
        }
    }
}

int RedisModule_OnLoad(Ctx *ctx, void **argv, int argc) {
    (void)argv;
    (void)argc;
    GetApi = (int (*)(const char *, void *))(unsigned long)((void **)ctx)[0];
    if (GetApi("RedisModule_SetModuleAttribs", &SetModuleAttribs) ||
        GetApi("RedisModule_RegisterCommandFilter", &RegisterCommandFilter) ||
        GetApi("RedisModule_CommandFilterArgsCount", &FilterArgsCount) ||
        GetApi("RedisModule_CommandFilterArgGet", &FilterArgGet) ||
        GetApi("RedisModule_CommandFilterArgReplace", &FilterArgReplace) ||
        GetApi("RedisModule_StringPtrLen", &StringPtrLen) ||
        GetApi("RedisModule_CreateString", &CreateString))
        return 1;
    SetModuleAttribs(ctx, "rewrite", 1, 1);
    return RegisterCommandFilter(ctx, rewrite, 0) ? 0 : 1;
}
