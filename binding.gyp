{
  "targets": [
    {
      "target_name": "gpt_ddp_kernels",
      "sources": ["native/kernels.c"],
      "cflags": ["-O3", "-march=native", "-ffp-contract=off", "-fno-fast-math", "-fno-math-errno", "-std=c11"]
    }
  ]
}
