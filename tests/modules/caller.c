/* A second module for tests/reliability.rs and tests/acl.rs: it calls other commands through
 * RedisModule_Call, as a module built on HeatBridge's commands would. Module calls run on a
 * temporary client that has no user unless the call has "C", unlike a connection's client, so
 * commands that check ACLs at run time must cope with that.
 *   CALLER.CALL <cmd> [args...]     RedisModule_Call(ctx, cmd, "v", ...): no ACL check
 *   CALLER.CALLACL <cmd> [args...]  the same with "Cv": ACL checked as the calling user
 *   CALLER.TIMER <plain|acl> <cmd> [args...]
 *                                   the same ("v" or "Cv") from a 0 ms module timer, whose
 *                                   context has no client of a user; replies OK at once
 *   CALLER.RESULT                   what the last timer's call got, as text: "+" then the
 *                                   reply for a string, "-" and the error for an error reply,
 *                                   "!errno <n>" for a NULL reply, "*<n>" and the elements
 *                                   one a line for an array, ":<n>" for an integer, "_" for
 *                                   a null or another type; nil until the timer ran
 * CALL/CALLACL reply with the called command's reply, or an error naming errno when the call
 * returned NULL. Built by the test with `cc -shared`. Self-contained: it fetches the few
 * module API functions it needs itself, as RedisModule_Init does in redismodule.h. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct Ctx Ctx;
typedef struct Str Str;
typedef struct CallReply CallReply;
typedef int (*CmdFunc)(Ctx *ctx, Str **argv, int argc);
typedef void (*TimerFunc)(Ctx *ctx, void *data);

/* redismodule.h's reply types. */
#define REPLY_STRING 0
#define REPLY_ERROR 1
#define REPLY_INTEGER 2
#define REPLY_ARRAY 3

static int (*GetApi)(const char *, void *);
static void (*SetModuleAttribs)(Ctx *, const char *, int, int);
static int (*CreateCommand)(Ctx *, const char *, CmdFunc, const char *, int, int, int);
static CallReply *(*Call)(Ctx *, const char *, const char *, ...);
static int (*ReplyWithCallReply)(Ctx *, CallReply *);
static int (*ReplyWithError)(Ctx *, const char *);
static int (*WrongArity)(Ctx *);
static void (*FreeCallReply)(CallReply *);
static const char *(*StringPtrLen)(const Str *, size_t *);
static uint64_t (*CreateTimer)(Ctx *, long long, TimerFunc, void *);
static Str *(*CreateStringFromString)(Ctx *, const Str *);
static void (*FreeString)(Ctx *, Str *);
static int (*ReplyWithSimpleString)(Ctx *, const char *);
static int (*ReplyWithStringBuffer)(Ctx *, const char *, size_t);
static int (*ReplyWithNull)(Ctx *);
static int (*CallReplyType)(CallReply *);
static const char *(*CallReplyStringPtr)(CallReply *, size_t *);
static long long (*CallReplyInteger)(CallReply *);
static size_t (*CallReplyLength)(CallReply *);
static CallReply *(*CallReplyArrayElement)(CallReply *, size_t);
static void *(*Alloc)(size_t);
static void (*Free)(void *);

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

/* A timer's pending call: the format and the command with its arguments, retained. */
typedef struct {
    const char *fmt;
    Str **argv;
    int argc;
} Pending;

/* What the last timer's call got (see CALLER.RESULT); NULL until one ran. */
static char *result;
static size_t result_len;

/* Appends `len` bytes of `p` to the result, growing it. */
static void result_add(const char *p, size_t len) {
    char *grown = Alloc(result_len + len + 1);
    if (result) memcpy(grown, result, result_len);
    memcpy(grown + result_len, p, len);
    grown[result_len + len] = 0;
    if (result) Free(result);
    result = grown;
    result_len += len;
}

static void result_text(CallReply *reply) {
    char buf[64];
    size_t len = 0;
    const char *p;
    switch (CallReplyType(reply)) {
    case REPLY_STRING:
    case REPLY_ERROR:
        result_add(CallReplyType(reply) == REPLY_STRING ? "+" : "-", 1);
        p = CallReplyStringPtr(reply, &len);
        if (p) result_add(p, len);
        break;
    case REPLY_INTEGER:
        snprintf(buf, sizeof buf, ":%lld", CallReplyInteger(reply));
        result_add(buf, strlen(buf));
        break;
    case REPLY_ARRAY:
        snprintf(buf, sizeof buf, "*%zu", CallReplyLength(reply));
        result_add(buf, strlen(buf));
        for (size_t i = 0; i < CallReplyLength(reply); i++) {
            result_add("\n", 1);
            result_text(CallReplyArrayElement(reply, i));
        }
        break;
    default:
        result_add("_", 1);
    }
}

static void timer_fired(Ctx *ctx, void *data) {
    Pending *pending = data;
    size_t len = 0;
    const char *cmd = StringPtrLen(pending->argv[0], &len);
    errno = 0;
    CallReply *reply = Call(ctx, cmd, pending->fmt, pending->argv + 1, (size_t)(pending->argc - 1));
    int saved = errno;
    if (result) Free(result);
    result = NULL;
    result_len = 0;
    if (reply == NULL) {
        char msg[64];
        snprintf(msg, sizeof msg, "!errno %d", saved);
        result_add(msg, strlen(msg));
    } else {
        result_text(reply);
        FreeCallReply(reply);
    }
    for (int i = 0; i < pending->argc; i++) FreeString(NULL, pending->argv[i]);
    Free(pending->argv);
    Free(pending);
}

static int timer_cmd(Ctx *ctx, Str **argv, int argc) {
    if (argc < 3) return WrongArity(ctx);
    const char *mode = StringPtrLen(argv[1], NULL);
    const char *fmt;
    if (strcmp(mode, "plain") == 0) {
        fmt = "v";
    } else if (strcmp(mode, "acl") == 0) {
        fmt = "Cv";
    } else {
        return ReplyWithError(ctx, "ERR caller: the mode is plain or acl");
    }
    Pending *pending = Alloc(sizeof *pending);
    pending->fmt = fmt;
    pending->argc = argc - 2;
    pending->argv = Alloc(sizeof(Str *) * (size_t)pending->argc);
    for (int i = 0; i < pending->argc; i++)
        pending->argv[i] = CreateStringFromString(NULL, argv[i + 2]);
    if (result) Free(result);
    result = NULL;
    result_len = 0;
    CreateTimer(ctx, 0, timer_fired, pending);
    return ReplyWithSimpleString(ctx, "OK");
}

static int result_cmd(Ctx *ctx, Str **argv, int argc) {
    (void)argv;
    if (argc != 1) return WrongArity(ctx);
    if (result == NULL) return ReplyWithNull(ctx);
    return ReplyWithStringBuffer(ctx, result, result_len);
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
        GetApi("RedisModule_StringPtrLen", &StringPtrLen) ||
        GetApi("RedisModule_CreateTimer", &CreateTimer) ||
        GetApi("RedisModule_CreateStringFromString", &CreateStringFromString) ||
        GetApi("RedisModule_FreeString", &FreeString) ||
        GetApi("RedisModule_ReplyWithSimpleString", &ReplyWithSimpleString) ||
        GetApi("RedisModule_ReplyWithStringBuffer", &ReplyWithStringBuffer) ||
        GetApi("RedisModule_ReplyWithNull", &ReplyWithNull) ||
        GetApi("RedisModule_CallReplyType", &CallReplyType) ||
        GetApi("RedisModule_CallReplyStringPtr", &CallReplyStringPtr) ||
        GetApi("RedisModule_CallReplyInteger", &CallReplyInteger) ||
        GetApi("RedisModule_CallReplyLength", &CallReplyLength) ||
        GetApi("RedisModule_CallReplyArrayElement", &CallReplyArrayElement) ||
        GetApi("RedisModule_Alloc", &Alloc) ||
        GetApi("RedisModule_Free", &Free))
        return 1;
    SetModuleAttribs(ctx, "caller", 1, 1);
    /* No keys declared: the called command's own key checks are what is under test. */
    if (CreateCommand(ctx, "caller.call", call_cmd, "write", 0, 0, 0) ||
        CreateCommand(ctx, "caller.callacl", call_acl_cmd, "write", 0, 0, 0) ||
        CreateCommand(ctx, "caller.timer", timer_cmd, "write", 0, 0, 0) ||
        CreateCommand(ctx, "caller.result", result_cmd, "readonly", 0, 0, 0))
        return 1;
    return 0;
}
