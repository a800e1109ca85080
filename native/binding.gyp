{
  "targets": [
    {
      "target_name": "rex_addon",
      "sources": ["addon/addon.cc", "src/proto.c", "src/errors.c"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "include", "src"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags": ["-std=c11", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden", "-fno-exceptions"]
    }
  ]
}
