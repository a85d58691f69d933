{
  # Native addon over the system FAISS (Debian libfaiss-dev 1.7.3 ships only a static
  # libfaiss.a, built position-independent, so it links into this shared object).
  "targets": [
    {
      "target_name": "dfaiss_native",
      "sources": [
        "native/addon.cc",
        "native/native_index.cc",
        "native/fp16.cc",
        "native/crc32c.cc",
        "native/buffers.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++14", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-O3", "-fopenmp", "-fexceptions", "-frtti", "-Wall", "-Wno-unused-parameter"],
      "libraries": [
        "/usr/lib/x86_64-linux-gnu/libfaiss.a",
        "-lopenblas",
        "-llapack",
        "-fopenmp",
        "-Wl,--exclude-libs,ALL"
      ]
    }
  ]
}
