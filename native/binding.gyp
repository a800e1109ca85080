{
  # The Node-API addon (build/Release/rex_addon.node). It compiles the codec's C
  # sources itself instead of linking librex.so, so the .node file has no run-time
  # dependency on where librex is installed.
  # `node-gyp rebuild` deletes native/build/ first, so scripts/build-native.mjs
  # runs it before `make all` (librex, C tests), never after.
  "targets": [
    {
      "target_name": "rex_addon",
      "sources": ["addon/addon.cc", "addon/fdpass.cc", "src/proto.c", "src/errors.c"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "include", "src"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags": ["-Wall", "-Wextra", "-Werror", "-fvisibility=hidden"],
      "cflags_c": ["-std=c11"],
      "cflags_cc": ["-std=c++17", "-fno-exceptions"]
    }
  ]
}
