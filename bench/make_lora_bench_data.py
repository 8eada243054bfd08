#!/usr/bin/env python3
"""make_lora_bench_data.py DIR - train/valid.jsonl of random common words (~700 words a row, well over 512
Llama 3 tokens) for the GPU LoRA speed runs (bench/train_bench_gpu.sh, bench/gpu_compare/train_quick.sh)."""
import json, random, sys
random.seed(0)
words = ("the of and to in is was for on that with as by at from his her they this be are have had not "
         "but what all were when we there can an your which their said if do will each about how up out "
         "them then she many some so these would other into has more two like him see time could no make "
         "than first been its who now people my made over did down only way find use may water long little "
         "very after words called just where most know").split()
for name, n in (("train", 64), ("valid", 4)):
    with open(f"{sys.argv[1]}/{name}.jsonl", "w") as f:
        for _ in range(n):  # ~700 words: well over 512 Llama 3 tokens
            f.write(json.dumps({"text": " ".join(random.choice(words) for _ in range(700))}) + "\n")
