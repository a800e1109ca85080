// fdpass.cc: the descriptor-passing primitives of the privilege-separated rexd
// (docs/ARCHITECTURE.md, "Privilege separation primitives"): the root monitor
// accepts connections and hands them, or the plaintext end of a TLS
// connection, to a session controller running as the connection's user.
//
//   socketPair(seqpacket) -> [fd0, fd1]   AF_UNIX, SOCK_STREAM or SOCK_SEQPACKET, close-on-exec
//   sendFds(sock, fds, header) -> bool    one message: header bytes + SCM_RIGHTS; false = would block
//   recvFds(sock, maxFds, maxHeader) -> { header, fds } | 'again' | 'eof'
//   listenUnix(path, backlog) -> fd       a non-blocking listening AF_UNIX stream socket
//   acceptUnix(fd) -> { fd, pid, uid, gid } | null   accept4 + SO_PEERCRED; null = none pending
//   FdWatch(fd, events, cb)               a libuv poll handle: cb(err, events) while fd is ready;
//                                         setEvents(events) changes what it waits for
//
// Messages go over SOCK_SEQPACKET only: a message and its descriptors arrive
// together or not at all, the header's length is the message's, and a header
// longer than the receiver allows is detected (MSG_TRUNC) instead of being
// read as the start of the next one. On a byte stream the descriptors ride on
// some byte of the stream and the receiver would need its own framing to know
// which message they belong to.
//
// Nothing here blocks: sendmsg/recvmsg use MSG_DONTWAIT (O_NONBLOCK would be
// shared with the other process through the open file description), and the
// caller waits for readability with an FdWatch, the loop's own epoll. A
// descriptor received in a message that is refused (too many, truncated
// control data, header too long or empty) is closed before the error is
// thrown: no path leaves one open that JavaScript does not hold.
#include "fdpass.h"

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

namespace {

constexpr size_t kMaxHeader = 65536;  // REX_FDPASS_MAX_HEADER in src/util/native.ts
constexpr int kMaxFds = 253;          // the kernel's SCM_MAX_FD

Napi::Value Fail(Napi::Env env, const std::string &what, int e, const char *code = nullptr) {
  Napi::Error err = Napi::Error::New(env, what + ": " + strerror(e));
  err.Set("errno", Napi::Number::New(env, e));
  const char *name = code ? code : strerrorname_np(e);
  err.Set("code", Napi::String::New(env, name ? name : "EIO"));
  err.ThrowAsJavaScriptException();
  return env.Undefined();
}

// A refusal of a received message: its descriptors are closed first.
Napi::Value Refuse(Napi::Env env, std::vector<int> &fds, const std::string &what, int e) {
  for (int fd : fds) close(fd);
  std::string msg = what + (fds.empty() ? "" : " (closed the " + std::to_string(fds.size()) + " descriptors received)");
  fds.clear();
  return Fail(env, msg, e);
}

// 0 when fd is an AF_UNIX SOCK_SEQPACKET socket, else an errno for the caller's message.
int CheckSeqpacket(int fd) {
  int type = 0, domain = 0;
  socklen_t l1 = sizeof type, l2 = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l1) != 0) return errno;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &l2) != 0) return errno;
  return type == SOCK_SEQPACKET && domain == AF_UNIX ? 0 : EPROTOTYPE;
}

Napi::Value SocketPair(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  bool seq = info.Length() > 0 && info[0].ToBoolean().Value();
  int sv[2];
  if (socketpair(AF_UNIX, (seq ? SOCK_SEQPACKET : SOCK_STREAM) | SOCK_CLOEXEC, 0, sv) != 0) return Fail(env, "socketpair", errno);
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, Napi::Number::New(env, sv[0]));
  out.Set(1u, Napi::Number::New(env, sv[1]));
  return out;
}

Napi::Value SendFds(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  // Types and ranges are checked in src/util/native.ts; sizes again here, as they size buffers.
  int sock = info[0].As<Napi::Number>().Int32Value();
  Napi::Array arr = info[1].As<Napi::Array>();
  Napi::Buffer<uint8_t> header = info[2].As<Napi::Buffer<uint8_t>>();
  if (header.Length() < 1 || header.Length() > kMaxHeader || arr.Length() > static_cast<uint32_t>(kMaxFds)) {
    Napi::RangeError::New(env, "sendFds: header must be 1 to 65536 bytes and at most 253 descriptors").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (int e = CheckSeqpacket(sock)) return Fail(env, "sendFds on fd " + std::to_string(sock) + " (needs an AF_UNIX SOCK_SEQPACKET socket)", e);
  const size_t n = arr.Length();
  std::vector<int> fds(n);
  for (size_t i = 0; i < n; i++) fds[i] = arr.Get(static_cast<uint32_t>(i)).As<Napi::Number>().Int32Value();
  struct iovec iov = {header.Data(), header.Length()};
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control(n ? CMSG_SPACE(n * sizeof(int)) : 0);
  if (n) {
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(n * sizeof(int));
    memcpy(CMSG_DATA(c), fds.data(), n * sizeof(int));
  }
  ssize_t r;
  do r = sendmsg(sock, &msg, MSG_DONTWAIT | MSG_NOSIGNAL); while (r < 0 && errno == EINTR);
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return Napi::Boolean::New(env, false);
  if (r < 0) return Fail(env, "sendFds on fd " + std::to_string(sock), errno);
  return Napi::Boolean::New(env, true);
}

Napi::Value RecvFds(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int sock = info[0].As<Napi::Number>().Int32Value();
  int maxFds = info[1].As<Napi::Number>().Int32Value();
  int64_t maxHeader = info[2].As<Napi::Number>().Int64Value();
  if (maxFds < 0 || maxFds > kMaxFds || maxHeader < 1 || maxHeader > static_cast<int64_t>(kMaxHeader)) {
    Napi::RangeError::New(env, "recvFds: maxFds must be 0 to 253 and maxHeader 1 to 65536").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (int e = CheckSeqpacket(sock)) return Fail(env, "recvFds on fd " + std::to_string(sock) + " (needs an AF_UNIX SOCK_SEQPACKET socket)", e);
  std::vector<uint8_t> buf(static_cast<size_t>(maxHeader));
  // Room for maxFds descriptors (CMSG_SPACE rounds up, so sometimes one more: counted below) and
  // for an SCM_CREDENTIALS message, should SO_PASSCRED be set on the socket.
  std::vector<char> control(CMSG_SPACE(static_cast<size_t>(maxFds > 0 ? maxFds : 1) * sizeof(int)) + CMSG_SPACE(sizeof(struct ucred)));
  struct iovec iov = {buf.data(), buf.size()};
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  ssize_t r;
  do r = recvmsg(sock, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC); while (r < 0 && errno == EINTR);
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return Napi::String::New(env, "again");
  if (r < 0) return Fail(env, "recvFds on fd " + std::to_string(sock), errno);
  std::vector<int> fds;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      fds.push_back(fd);
    }
  }
  const std::string where = "recvFds on fd " + std::to_string(sock);
  if (msg.msg_flags & MSG_CTRUNC)
    return Refuse(env, fds, where + ": control data truncated (MSG_CTRUNC): the sender passed more than " + std::to_string(maxFds) + " descriptors", ETOOMANYREFS);
  if (fds.size() > static_cast<size_t>(maxFds))
    return Refuse(env, fds, where + ": " + std::to_string(fds.size()) + " descriptors, at most " + std::to_string(maxFds) + " allowed", ETOOMANYREFS);
  if (msg.msg_flags & MSG_TRUNC)
    return Refuse(env, fds, where + ": message longer than " + std::to_string(maxHeader) + " bytes (MSG_TRUNC)", EMSGSIZE);
  if (r == 0 && !fds.empty()) return Refuse(env, fds, where + ": a message with descriptors and no header", EBADMSG);
  if (r == 0) return Napi::String::New(env, "eof");  // sendFds never sends an empty header
  Napi::Object out = Napi::Object::New(env);
  Napi::Array arr = Napi::Array::New(env, fds.size());
  for (size_t i = 0; i < fds.size(); i++) arr.Set(static_cast<uint32_t>(i), Napi::Number::New(env, fds[i]));
  out.Set("header", Napi::Buffer<uint8_t>::Copy(env, buf.data(), static_cast<size_t>(r)));
  out.Set("fds", arr);
  if (env.IsExceptionPending()) {  // out of memory in V8: the descriptors never reached JavaScript
    for (int fd : fds) close(fd);
    return env.Undefined();
  }
  return out;
}

Napi::Value ListenUnix(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>().Utf8Value();
  int backlog = info[1].As<Napi::Number>().Int32Value();
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof sa.sun_path) return Fail(env, "listenUnix " + path + ": path length", ENAMETOOLONG);
  memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Fail(env, "listenUnix " + path + ": socket", errno);
  if (bind(fd, reinterpret_cast<struct sockaddr *>(&sa), sizeof sa) != 0 || listen(fd, backlog) != 0) {
    int e = errno;
    close(fd);
    return Fail(env, "listenUnix " + path, e);
  }
  return Napi::Number::New(env, fd);
}

Napi::Value AcceptUnix(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int lfd = info[0].As<Napi::Number>().Int32Value();
  int fd;
  // Not SOCK_NONBLOCK: the connection is passed on, and net.Socket sets O_NONBLOCK itself where it is used.
  do fd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC); while (fd < 0 && errno == EINTR);
  if (fd < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED)) return env.Null();
  if (fd < 0) return Fail(env, "acceptUnix on fd " + std::to_string(lfd), errno);
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    int e = errno;
    close(fd);
    return Fail(env, "acceptUnix: SO_PEERCRED", e);
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("fd", Napi::Number::New(env, fd));
  o.Set("pid", Napi::Number::New(env, cred.pid));
  o.Set("uid", Napi::Number::New(env, cred.uid));
  o.Set("gid", Napi::Number::New(env, cred.gid));
  if (env.IsExceptionPending()) close(fd);
  return o;
}

// A libuv poll handle on a descriptor JavaScript owns. It holds a strong
// reference to itself while active, so it cannot be collected while the loop
// may still call it; close() stops it (and must come before the descriptor is
// closed: epoll would otherwise watch whatever reuses the number).
class FdWatch : public Napi::ObjectWrap<FdWatch> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "FdWatch", {InstanceMethod("close", &FdWatch::Close), InstanceMethod("ref", &FdWatch::DoRef),
                                        InstanceMethod("unref", &FdWatch::DoUnref), InstanceMethod("setEvents", &FdWatch::SetEvents)});
  }

  explicit FdWatch(const Napi::CallbackInfo &info) : Napi::ObjectWrap<FdWatch>(info) {
    Napi::Env env = info.Env();
    int fd = info[0].As<Napi::Number>().Int32Value();
    int ev = info[1].As<Napi::Number>().Int32Value();
    cb_ = Napi::Persistent(info[2].As<Napi::Function>());
    env_ = env;
    uv_loop_t *loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok) {
      Napi::Error::New(env, "FdWatch: no event loop").ThrowAsJavaScriptException();
      return;
    }
    poll_ = new uv_poll_t();
    poll_->data = this;
    int rc = uv_poll_init(loop, poll_, fd);
    if (rc != 0) {
      delete poll_;  // never registered with the loop
      poll_ = nullptr;
    } else {
      rc = uv_poll_start(poll_, (ev & 1 ? UV_READABLE : 0) | (ev & 2 ? UV_WRITABLE : 0), OnPoll);
      if (rc != 0) Release();
    }
    if (rc != 0) {
      Napi::Error err = Napi::Error::New(env, std::string("FdWatch on fd ") + std::to_string(fd) + ": " + uv_strerror(rc));
      err.Set("code", Napi::String::New(env, uv_err_name(rc)));
      err.ThrowAsJavaScriptException();
      return;
    }
    Ref();
  }

 private:
  static void OnPoll(uv_poll_t *h, int status, int events) {
    FdWatch *self = static_cast<FdWatch *>(h->data);
    if (!self) return;
    Napi::Env env(self->env_);
    Napi::HandleScope scope(env);
    Napi::Value err = status < 0 ? Napi::String::New(env, uv_err_name(status)) : env.Null();
    Napi::Value ev = Napi::Number::New(env, (events & UV_READABLE ? 1 : 0) | (events & UV_WRITABLE ? 2 : 0) | (events & UV_DISCONNECT ? 4 : 0));
    self->cb_.MakeCallback(env.Global(), {err, ev});
  }

  void Release() {
    if (!poll_) return;
    uv_poll_stop(poll_);
    poll_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t *>(poll_), [](uv_handle_t *x) { delete reinterpret_cast<uv_poll_t *>(x); });
    poll_ = nullptr;
  }

  Napi::Value Close(const Napi::CallbackInfo &info) {
    if (poll_) {
      Release();
      Unref();
    }
    return info.Env().Undefined();
  }
  // libuv allows one poll handle per descriptor: waiting for writability too changes this one's events.
  Napi::Value SetEvents(const Napi::CallbackInfo &info) {
    int ev = info[0].As<Napi::Number>().Int32Value();
    if (poll_) {
      int rc = uv_poll_start(poll_, (ev & 1 ? UV_READABLE : 0) | (ev & 2 ? UV_WRITABLE : 0), OnPoll);
      if (rc != 0) {
        Napi::Error::New(info.Env(), std::string("FdWatch.setEvents: ") + uv_strerror(rc)).ThrowAsJavaScriptException();
        return info.Env().Undefined();
      }
    }
    return info.Env().Undefined();
  }
  Napi::Value DoRef(const Napi::CallbackInfo &info) {
    if (poll_) uv_ref(reinterpret_cast<uv_handle_t *>(poll_));
    return info.This();
  }
  Napi::Value DoUnref(const Napi::CallbackInfo &info) {
    if (poll_) uv_unref(reinterpret_cast<uv_handle_t *>(poll_));
    return info.This();
  }

  uv_poll_t *poll_ = nullptr;
  Napi::FunctionReference cb_;
  napi_env env_ = nullptr;
};

}  // namespace

void InitFdPass(Napi::Env env, Napi::Object exports) {
  exports.Set("socketPair", Napi::Function::New(env, SocketPair, "socketPair"));
  exports.Set("sendFds", Napi::Function::New(env, SendFds, "sendFds"));
  exports.Set("recvFds", Napi::Function::New(env, RecvFds, "recvFds"));
  exports.Set("listenUnix", Napi::Function::New(env, ListenUnix, "listenUnix"));
  exports.Set("acceptUnix", Napi::Function::New(env, AcceptUnix, "acceptUnix"));
  exports.Set("FdWatch", FdWatch::Define(env));
}
