{
  "targets": [
    {
      "target_name": "gpt_ddp_kernels",
      "sources": ["native/kernels.c", "native/matmul.c", "native/gemm.c", "native/gemm-rows.c"],
      "cflags": ["-O3", "-ffp-contract=off", "-fno-fast-math", "-fno-math-errno", "-std=gnu11"],
      "libraries": ["-ldl", "-lpthread"]
    }
  ]
}
