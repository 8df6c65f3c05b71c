/* A second module for tests/reliability.rs: it calls other commands through RedisModule_Call,
 * as a module built on HeatBridge's commands would. Module calls run on a temporary client
 * that has no user, unlike a connection's client, so commands that check ACLs at run time
 * must cope with that.
 *   CALLER.CALL <cmd> [args...]     RedisModule_Call(ctx, cmd, "v", ...): no ACL check
 *   CALLER.CALLACL <cmd> [args...]  the same with "Cv": ACL checked as the calling user
 * Each replies with the called command's reply, or an error naming errno when the call
 * returned NULL. Built by the test with `cc -shared`. Self-contained: it fetches the few
 * module API functions it needs itself, as RedisModule_Init does in redismodule.h. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

typedef struct Ctx Ctx;
typedef struct Str Str;
typedef struct CallReply CallReply;
typedef int (*CmdFunc)(Ctx *ctx, Str **argv, int argc);

static int (*GetApi)(const char *, void *);
static void (*SetModuleAttribs)(Ctx *, const char *, int, int);
static int (*CreateCommand)(Ctx *, const char *, CmdFunc, const char *, int, int, int);
static CallReply *(*Call)(Ctx *, const char *, const char *, ...);
static int (*ReplyWithCallReply)(Ctx *, CallReply *);
static int (*ReplyWithError)(Ctx *, const char *);
static int (*WrongArity)(Ctx *);
static void (*FreeCallReply)(CallReply *);
static const char *(*StringPtrLen)(const Str *, size_t *);

static int call_with(Ctx *ctx, Str **argv, int argc, const char *fmt) {
    if (argc < 2) return WrongArity(ctx);
    size_t len = 0;
    /* A module string's buffer is NUL-terminated. */
    const char *cmd = StringPtrLen(argv[1], &len);
    errno = 0;
    CallReply *reply = Call(ctx, cmd, fmt, argv + 2, (size_t)(argc - 2));
    if (reply == NULL) {
        char msg[128];
        snprintf(msg, sizeof msg, "ERR caller: RedisModule_Call returned NULL (errno %d: %s)",
                 errno, strerror(errno));
        return ReplyWithError(ctx, msg);
    }
    ReplyWithCallReply(ctx, reply);
    FreeCallReply(reply);
    return 0;
}

static int call_cmd(Ctx *ctx, Str **argv, int argc) { return call_with(ctx, argv, argc, "v"); }

static int call_acl_cmd(Ctx *ctx, Str **argv, int argc) {
    return call_with(ctx, argv, argc, "Cv");
}

int RedisModule_OnLoad(Ctx *ctx, void **argv, int argc) {
    (void)argv;
    (void)argc;
    GetApi = (int (*)(const char *, void *))(unsigned long)((void **)ctx)[0];
    if (GetApi("RedisModule_SetModuleAttribs", &SetModuleAttribs) ||
        GetApi("RedisModule_CreateCommand", &CreateCommand) ||
        GetApi("RedisModule_Call", &Call) ||
        GetApi("RedisModule_ReplyWithCallReply", &ReplyWithCallReply) ||
        GetApi("RedisModule_ReplyWithError", &ReplyWithError) ||
        GetApi("RedisModule_WrongArity", &WrongArity) ||
        GetApi("RedisModule_FreeCallReply", &FreeCallReply) ||
        GetApi("RedisModule_StringPtrLen", &StringPtrLen))
        return 1;
    SetModuleAttribs(ctx, "caller", 1, 1);
    /* No keys declared: the called command's own key checks are what is under test. */
    if (CreateCommand(ctx, "caller.call", call_cmd, "write", 0, 0, 0) ||
        CreateCommand(ctx, "caller.callacl", call_acl_cmd, "write", 0, 0, 0))
        return 1;
    return 0;
}
