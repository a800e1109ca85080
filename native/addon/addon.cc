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
//
// Built with NAPI_DISABLE_CPP_EXCEPTIONS and -fno-exceptions: errors are thrown
// into JavaScript with ThrowAsJavaScriptException and an early return.
#include <napi.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <sys/socket.h>
#include <sys/types.h>

#include "rex.h"

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

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("decodeFrame", Napi::Function::New(env, DecodeFrame, "decodeFrame"));
  exports.Set("peerCredentials", Napi::Function::New(env, PeerCredentials, "peerCredentials"));
  exports.Set("protoVersion", Napi::Number::New(env, REX_PROTO_VERSION));
  return exports;
}

}  // namespace

NODE_API_MODULE(rex_addon, Init)
