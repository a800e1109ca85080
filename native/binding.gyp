{
  # The Node-API addon (build/Release/rex_addon.node). It compiles the codec's C
  # sources itself instead of linking librex.so, so the .node file has no run-time
  # dependency on where librex is installed.
  #
  # librex_make: `node-gyp rebuild` starts with `clean`, which deletes all of
  # native/build/, including the librex.so, librex.a, demo and test binaries that
  # `make all` put there just before (scripts/build-native.mjs runs make first).
  # Running `make all` again from here, after the clean, leaves both sets of
  # outputs in place whatever the order; with make already run after node-gyp it
  # is a no-op. MAKEFLAGS is dropped because it names the jobserver of node-gyp's
  # make, whose file descriptors this nested make does not get.
  "targets": [
    {
      "target_name": "librex_make",
      "type": "none",
      "actions": [
        {
          "action_name": "make_all",
          "inputs": ["Makefile", "include/rex.h", "src/internal.h", "src/proto.c", "src/errors.c", "src/client.c"],
          "outputs": ["build/lib/librex.so", "build/lib/librex.a"],
          "action": ["env", "-u", "MAKEFLAGS", "-u", "MFLAGS", "make", "-j2", "-C", "<(module_root_dir)", "all"]
        }
      ]
    },
    {
      "target_name": "rex_addon",
      "dependencies": ["librex_make"],
      "sources": ["addon/addon.cc", "src/proto.c", "src/errors.c"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "include", "src"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags": ["-Wall", "-Wextra", "-Werror", "-fvisibility=hidden"],
      "cflags_c": ["-std=c11"],
      "cflags_cc": ["-std=c++17", "-fno-exceptions"]
    }
  ]
}
