// addon.cc: the Node-API face of librex's C code, kept thin (as better-sqlite3
// does): argument checking with precise messages lives in src/util/native.ts;
// this layer only converts between JavaScript values and the C API.
//
//   decodeFrame(buf, maxPayload?) -> { frame, consumed } | { incomplete: true }
//                                    | { error: 'MALFORMED' | 'TOO_BIG', message, offset }
//     The frame has the shape of test/vectors/protocol-v1.json: uint/int values as
//     decimal strings (64-bit safe), f64 as numbers ("NaN", "Infinity",
//     "-Infinity" as strings), bytes as hex, lists as nested arrays.
//   peerCredentials(fd) -> { pid, uid, gid } of the process at the other end of a
//     connected Unix socket (SO_PEERCRED), for rexd's check of local callers.
//   spawnProcess(file, argv, env, cwd, stdio, onExit) -> [pid, fd0, fd1, ...]
//     Starts a program with glibc's posix_spawn (clone with CLONE_VM|CLONE_VFORK:
//     no copy of rexd's page tables, which made libuv's fork() cost 2-6 ms), in a
//     session of its own, every signal at its default and none blocked, in cwd.
//     stdio[i] is 1 for a socket pair (the returned fd i is rexd's end, close-on-
//     exec) or 0 for /dev/null (returned as -1). An exec failure is thrown with
//     `code` (ENOENT, EACCES, ...). The child is reaped through a pidfd watched by
//     the event loop: onExit(code, signal) once, with one of them null.
//   setChildSubreaper() -> boolean: PR_SET_CHILD_SUBREAPER on this process, so that
//     the orphans of its jobs are reparented here and not to init (docs/EXEC.md,
//     Containment); false when the kernel refuses.
//   reapChild(pid) -> boolean: waitpid(pid, WNOHANG) for such an adopted orphan,
//     which no pidfd watches; true once it is reaped (or is no child of ours).
//   cpuid(leaf, subleaf) -> [eax, ebx, ecx, edx]: what this CPU's CPUID reports
//     (unsigned 32-bit numbers), for the host's CPU profile (src/cpu/profile.ts).
//   xgetbv0() -> [lo, hi]: XCR0, the state components the OS enables; [0, 0]
//     when CPUID says OSXSAVE is off (xgetbv would fault).
//   socketPair, sendFds, recvFds, listenUnix, acceptUnix, FdWatch: descriptor
//     passing for the privilege-separated rexd, in fdpass.cc.
//
// Built with NAPI_DISABLE_CPP_EXCEPTIONS and -fno-exceptions: errors are thrown
// into JavaScript with ThrowAsJavaScriptException and an early return.
#include <napi.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "wire.h"
#include "fdpass.h"

namespace {

const char *KindName(uint8_t kind) {
  switch (kind) {
    case REX_KIND_UINT: return "uint";
    case REX_KIND_INT: return "int";
    case REX_KIND_F64: return "f64";
    case REX_KIND_STRING: return "string";
    case REX_KIND_BYTES: return "bytes";
    case REX_KIND_LIST: return "list";
    case REX_KIND_BOOL: return "bool";
    default: return "?";
  }
}

std::string Hex(const uint8_t *p, size_t n) {
  static const char digits[] = "0123456789abcdef";
  std::string s(n * 2, '0');
  for (size_t i = 0; i < n; i++) {
    s[2 * i] = digits[p[i] >> 4];
    s[2 * i + 1] = digits[p[i] & 15];
  }
  return s;
}

Napi::Value F64(Napi::Env env, double v) {
  if (std::isnan(v)) return Napi::String::New(env, "NaN");
  if (std::isinf(v)) return Napi::String::New(env, v > 0 ? "Infinity" : "-Infinity");
  return Napi::Number::New(env, v);
}

// The children of parent (REX_ATTR_NONE: the payload) as an array; depth is
// bounded by the decoder (REX_PROTO_MAX_DEPTH), so the recursion is too.
Napi::Array Attrs(Napi::Env env, const rex_frame &f, uint32_t parent) {
  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;
  for (uint32_t i = rex_attr_first(&f, parent); i != REX_ATTR_NONE; i = f.attrs[i].next) {
    const rex_attr &a = f.attrs[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("tag", Napi::Number::New(env, a.tag));
    o.Set("kind", Napi::String::New(env, KindName(a.kind)));
    switch (a.kind) {
      case REX_KIND_UINT: o.Set("value", Napi::String::New(env, std::to_string(a.v.u))); break;
      case REX_KIND_INT: o.Set("value", Napi::String::New(env, std::to_string(a.v.i))); break;
      case REX_KIND_F64: o.Set("value", F64(env, a.v.f)); break;
      case REX_KIND_STRING:
        o.Set("value", Napi::String::New(env, reinterpret_cast<const char *>(a.data), a.len));
        break;
      case REX_KIND_BYTES: o.Set("value", Napi::String::New(env, Hex(a.data, a.len))); break;
      case REX_KIND_BOOL: o.Set("value", Napi::Boolean::New(env, a.v.b != 0)); break;
      case REX_KIND_LIST: o.Set("value", Attrs(env, f, i)); break;
      default: break;
    }
    out.Set(n++, o);
  }
  return out;
}

Napi::Value DecodeFrame(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsBuffer()) {
    Napi::TypeError::New(env, "decodeFrame(buf, maxPayload?): buf must be a Buffer").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  size_t max_payload = REX_PROTO_MAX_PAYLOAD;
  if (info.Length() > 1 && !info[1].IsUndefined()) {
    if (!info[1].IsNumber()) {
      Napi::TypeError::New(env, "decodeFrame(buf, maxPayload?): maxPayload must be a number").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    double m = info[1].As<Napi::Number>().DoubleValue();
    if (!(m >= 1 && m <= 4294967295.0)) {
      Napi::RangeError::New(env, "decodeFrame: maxPayload must be between 1 and 2^32-1").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    max_payload = static_cast<size_t>(m);
  }
  Napi::Buffer<uint8_t> buf = info[0].As<Napi::Buffer<uint8_t>>();
  // One allocation, sized by what the input can hold (7 bytes per attribute at least).
  std::vector<rex_attr> arena(REX_ATTRS_FOR_PAYLOAD(buf.Length()));
  rex_frame f;
  rex_frame_init(&f, arena.data(), arena.size());
  size_t consumed = 0;
  int rc = rex_frame_decode(buf.Data(), buf.Length(), max_payload, &f, &consumed);
  Napi::Object result = Napi::Object::New(env);
  if (rc == REX_EAGAIN) {
    result.Set("incomplete", Napi::Boolean::New(env, true));
    return result;
  }
  if (rc != 0) {
    result.Set("error", Napi::String::New(env, rex_err_name(rc)));
    result.Set("message", Napi::String::New(env, f.err[0] ? f.err : rex_strerror(rc)));
    result.Set("offset", Napi::Number::New(env, static_cast<double>(f.err_offset)));
    return result;
  }
  Napi::Object frame = Napi::Object::New(env);
  frame.Set("type", Napi::Number::New(env, f.type));
  frame.Set("flags", Napi::Number::New(env, f.flags));
  frame.Set("stream", Napi::Number::New(env, f.stream));
  frame.Set("attrs", Attrs(env, f, REX_ATTR_NONE));
  result.Set("frame", frame);
  result.Set("consumed", Napi::Number::New(env, static_cast<double>(consumed)));
  return result;
}

Napi::Value PeerCredentials(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) {
    Napi::TypeError::New(env, "peerCredentials(fd): fd must be a number").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int fd = info[0].As<Napi::Number>().Int32Value();
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    int e = errno;
    Napi::Error err = Napi::Error::New(env, std::string("SO_PEERCRED on fd ") + std::to_string(fd) + ": " + strerror(e));
    err.Set("errno", Napi::Number::New(env, e));
    err.ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("pid", Napi::Number::New(env, cred.pid));
  o.Set("uid", Napi::Number::New(env, cred.uid));
  o.Set("gid", Napi::Number::New(env, cred.gid));
  return o;
}

// A spawned child being waited for: its pidfd polled by the event loop.
struct Watched {
  uv_poll_t poll;
  pid_t pid;
  int pidfd;
  napi_env env;
  Napi::FunctionReference onExit;
};

void Reap(uv_poll_t *handle, int status, int events) {
  (void)status, (void)events;
  Watched *w = static_cast<Watched *>(handle->data);
  int ws = 0;
  pid_t r = waitpid(w->pid, &ws, WNOHANG);
  if (r == 0 || (r < 0 && errno == EINTR)) return;  // not yet (a spurious wake-up)
  uv_poll_stop(&w->poll);
  close(w->pidfd);
  {
    Napi::Env env(w->env);
    Napi::HandleScope scope(env);
    Napi::Value code = env.Null(), sig = env.Null();
    if (r < 0) code = Napi::Number::New(env, -1);  // reaped elsewhere: the status is lost
    else if (WIFEXITED(ws)) code = Napi::Number::New(env, WEXITSTATUS(ws));
    else sig = Napi::Number::New(env, WTERMSIG(ws));
    w->onExit.MakeCallback(env.Global(), {code, sig});
  }
  uv_close(reinterpret_cast<uv_handle_t *>(&w->poll), [](uv_handle_t *h) { delete static_cast<Watched *>(h->data); });
}

void ThrowErrno(Napi::Env env, const std::string &what, int e) {
  Napi::Error err = Napi::Error::New(env, what + ": " + strerror(e));
  err.Set("errno", Napi::Number::New(env, e));
  const char *name = strerrorname_np(e);
  err.Set("code", Napi::String::New(env, name ? name : "EIO"));
  err.ThrowAsJavaScriptException();
}

// Strings of a JavaScript array, kept alive for the char* vector (NULL-terminated).
struct CStrings {
  std::vector<std::string> keep;
  std::vector<char *> ptrs;
  explicit CStrings(const Napi::Array &a) {
    for (uint32_t i = 0; i < a.Length(); i++) keep.push_back(a.Get(i).As<Napi::String>().Utf8Value());
    for (auto &s : keep) ptrs.push_back(s.data());
    ptrs.push_back(nullptr);
  }
};

Napi::Value SpawnProcess(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  // Types are checked in src/util/native.ts.
  std::string file = info[0].As<Napi::String>().Utf8Value();
  CStrings argv(info[1].As<Napi::Array>()), envp(info[2].As<Napi::Array>());
  std::string cwd = info[3].As<Napi::String>().Utf8Value();
  Napi::Array stdio = info[4].As<Napi::Array>();
  Napi::Function onExit = info[5].As<Napi::Function>();
  const int n = static_cast<int>(stdio.Length());

  std::vector<int> mine(n, -1), theirs(n, -1);
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  auto cleanup = [&]() {
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    for (int fd : theirs) if (fd >= 0) close(fd);
  };
  for (int i = 0; i < n; i++) {
    if (stdio.Get(i).As<Napi::Number>().Int32Value() == 0) {
      posix_spawn_file_actions_addopen(&fa, i, "/dev/null", O_RDWR, 0);
      continue;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      int e = errno;
      cleanup();
      for (int fd : mine) if (fd >= 0) close(fd);
      ThrowErrno(env, "spawn " + file + ": socketpair", e);
      return env.Undefined();
    }
    mine[i] = sv[0];
    // The child's end must not sit at a number below n, where an earlier dup2 of this loop would replace it.
    theirs[i] = sv[1] >= n ? sv[1] : fcntl(sv[1], F_DUPFD_CLOEXEC, n);
    if (theirs[i] != sv[1]) close(sv[1]);
    posix_spawn_file_actions_adddup2(&fa, theirs[i], i);
  }
  posix_spawn_file_actions_addclosefrom_np(&fa, n);  // descriptors this process has without close-on-exec stay here
  posix_spawn_file_actions_addchdir_np(&fa, cwd.c_str());
  // Every signal back to its default, glibc's two internal ones (32, 33) included: sigfillset leaves those
  // out, and posix_spawn then leaves them ignored in the program, which a child of node's spawn never is.
  sigset_t all, none;
  memset(&all, 0xff, sizeof all);
  sigemptyset(&none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, file.c_str(), &fa, &attr, argv.ptrs.data(), envp.ptrs.data());
  cleanup();
  if (rc != 0) {
    for (int fd : mine) if (fd >= 0) close(fd);
    ThrowErrno(env, "spawn " + file, rc);
    return env.Undefined();
  }
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  uv_loop_t *loop = nullptr;
  Watched *w = nullptr;
  if (pidfd >= 0 && napi_get_uv_event_loop(env, &loop) == napi_ok) {
    w = new Watched();
    w->pid = pid;
    w->pidfd = pidfd;
    w->env = env;
    w->onExit = Napi::Persistent(onExit);
    w->poll.data = w;
    if (uv_poll_init(loop, &w->poll, pidfd) != 0) {
      delete w;
      w = nullptr;
    } else {
      uv_poll_start(&w->poll, UV_READABLE, Reap);
    }
  }
  if (!w) {
    // Cannot watch it: end it rather than leave a process nobody reaps.
    int e = pidfd < 0 ? errno : EIO;
    if (pidfd >= 0) close(pidfd);
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    for (int fd : mine) if (fd >= 0) close(fd);
    ThrowErrno(env, "spawn " + file + ": pidfd_open", e);
    return env.Undefined();
  }
  Napi::Array out = Napi::Array::New(env, n + 1);
  out.Set(0u, Napi::Number::New(env, pid));
  for (int i = 0; i < n; i++) out.Set(static_cast<uint32_t>(i + 1), Napi::Number::New(env, mine[i]));
  return out;
}

Napi::Value Cpuid(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) {
    Napi::TypeError::New(env, "cpuid(leaf, subleaf): both must be numbers").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  uint32_t leaf = info[0].As<Napi::Number>().Uint32Value(), sub = info[1].As<Napi::Number>().Uint32Value();
  uint32_t a, b, c, d;
  __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(leaf), "c"(sub));
  Napi::Array out = Napi::Array::New(env, 4);
  out.Set(0u, Napi::Number::New(env, a));
  out.Set(1u, Napi::Number::New(env, b));
  out.Set(2u, Napi::Number::New(env, c));
  out.Set(3u, Napi::Number::New(env, d));
  return out;
}

Napi::Value Xgetbv0(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  uint32_t a, b, c, d, lo = 0, hi = 0;
  __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
  if (c & (1u << 27)) __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, Napi::Number::New(env, lo));
  out.Set(1u, Napi::Number::New(env, hi));
  return out;
}

Napi::Value SetChildSubreaper(const Napi::CallbackInfo &info) {
  return Napi::Boolean::New(info.Env(), prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0);
}

Napi::Value ReapChild(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) {
    Napi::TypeError::New(env, "reapChild(pid): pid must be a number").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  pid_t pid = info[0].As<Napi::Number>().Int32Value();
  if (pid <= 0) {
    Napi::RangeError::New(env, "reapChild(pid): pid must be positive").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  pid_t r;
  do r = waitpid(pid, nullptr, WNOHANG); while (r < 0 && errno == EINTR);
  return Napi::Boolean::New(env, r != 0);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("setChildSubreaper", Napi::Function::New(env, SetChildSubreaper, "setChildSubreaper"));
  exports.Set("reapChild", Napi::Function::New(env, ReapChild, "reapChild"));
  exports.Set("cpuid", Napi::Function::New(env, Cpuid, "cpuid"));
  exports.Set("xgetbv0", Napi::Function::New(env, Xgetbv0, "xgetbv0"));
  exports.Set("spawnProcess", Napi::Function::New(env, SpawnProcess, "spawnProcess"));
  exports.Set("decodeFrame", Napi::Function::New(env, DecodeFrame, "decodeFrame"));
  exports.Set("peerCredentials", Napi::Function::New(env, PeerCredentials, "peerCredentials"));
  exports.Set("protoVersion", Napi::Number::New(env, REX_PROTO_VERSION));
  InitFdPass(env, exports);  // socketPair, sendFds, recvFds, listenUnix, acceptUnix, FdWatch
  return exports;
}

}  // namespace

NODE_API_MODULE(rex_addon, Init)
