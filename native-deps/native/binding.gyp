{
  "targets": [{
    "target_name": "thinfs_native",
    "sources": ["thinfs_native.c"],
    "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
  }]
}
