{
  # Two modules. dfaiss_native links FAISS statically (the build scripts/faiss-build.sh
  # cached for this CPU, a user build via DFAISS_FAISS_PREFIX, or Debian's generic
  # libfaiss.a: scripts/faiss-config.mjs decides). dfaiss_cpu is a tiny module without FAISS
  # or -m flags that src/native/binding.ts loads first, to refuse a FAISS built for
  # instructions this CPU lacks before any of its code runs.
  "variables": {
    "faiss_include": "<!(node scripts/faiss-config.mjs include)",
    "faiss_level": "<!(node scripts/faiss-config.mjs level)",
    "faiss_gpu": "<!(node scripts/faiss-config.mjs gpu)"
  },
  "target_defaults": {
    "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
    "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED", "DFAISS_SIMD_LEVEL=\"<(faiss_level)\""],
    "cflags!": ["-fno-exceptions", "-fno-rtti"],
    "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++14", "-std=gnu++17"],
    "cflags_cc": ["-std=c++17", "-fexceptions", "-frtti", "-Wall", "-Wno-unused-parameter"]
  },
  "targets": [
    {
      "target_name": "dfaiss_cpu",
      "sources": ["native/cpu_check.cc"]
    },
    {
      "target_name": "dfaiss_native",
      "sources": [
        "native/addon.cc",
        "native/native_index.cc",
        "native/fp16.cc",
        "native/crc32c.cc",
        "native/buffers.cc",
        "native/vectors.cc"
      ],
      # The FAISS headers first, so a cached or user build is not shadowed by /usr/include/faiss.
      "include_dirs": ["<(faiss_include)"],
      "cflags_cc": ["-O3", "-fopenmp"],
      "conditions": [["faiss_gpu=='1'", { "defines": ["FAISS_GPU"] }]],
      "libraries": [
        "<!@(node scripts/faiss-config.mjs libs)",
        "-lopenblas",
        "-llapack",
        "-fopenmp",
        "-Wl,--exclude-libs,ALL"
      ]
    }
  ]
}
