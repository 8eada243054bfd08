#!/usr/bin/env python3
"""HF PEFT LoRA training speed on one CUDA GPU: the reference side of
bench/train_bench_gpu.sh (issue 8: lmx >= 1.6x PEFT tokens/s).

    python3 bench/peft_train_bench.py --model /tmp/llama-1b [--batch 4] [--seq 512]
        [--rank 8] [--scale 20] [--steps 20] [--warmup 5] [--lr 1e-5] [--load-4bit]

Setup, matched to `lmx lora` in train_bench_gpu.sh: LoRA rank 8 on every
linear of every block (q,k,v,o,gate,up,down), lora_alpha = scale·rank so
that PEFT's scaling alpha/r equals mlx-lm's "scale" 20.0 (its default),
dropout 0, base weights bf16 and frozen (with --load-4bit: bitsandbytes NF4,
the usual QLoRA; skipped with a message when bitsandbytes is missing), LoRA
weights f32 (PEFT's default: adapters in f32 under a bf16 base), autocast off,
the model's default attention (sdpa), torch.optim.Adam(lr) over the LoRA
parameters, batches of random token ids (full rows: every position is a
target). Reported (one JSON line on stdout): tokens/s = batch·seq·steps / time
over `steps` timed steps after `warmup` untimed ones (torch.cuda.synchronize
around the timed loop), seconds per step, torch.cuda.max_memory_allocated.
"""
import argparse, json, sys, time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--scale", type=float, default=20.0)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--load-4bit", action="store_true")
    ap.add_argument("--grad-checkpoint", action="store_true")
    a = ap.parse_args()

    import torch
    import transformers
    import peft
    from transformers import AutoModelForCausalLM
    from peft import LoraConfig, get_peft_model

    kw = dict(torch_dtype=torch.bfloat16)
    if a.load_4bit:
        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig
        except ImportError:
            print(json.dumps({"skipped": "bitsandbytes is not installed (PEFT QLoRA needs it)"}))
            return 0
        kw["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                       bnb_4bit_compute_dtype=torch.bfloat16)
    if a.load_4bit:  # bitsandbytes models refuse .to(): placed on the GPU as they load
        model = AutoModelForCausalLM.from_pretrained(a.model, device_map={"": 0}, **kw)
    else:
        model = AutoModelForCausalLM.from_pretrained(a.model, **kw).to("cuda")
    if a.grad_checkpoint:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    cfg = LoraConfig(r=a.rank, lora_alpha=a.scale * a.rank, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(model, cfg)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=a.lr)
    vocab = model.config.vocab_size
    g = torch.Generator(device="cuda").manual_seed(0)

    def step():
        ids = torch.randint(0, vocab, (a.batch, a.seq), device="cuda", generator=g)
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss

    for _ in range(a.warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    loss = None
    for _ in range(a.steps):
        loss = step()
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    res = {
        "impl": "peft", "model": a.model, "base": "nf4" if a.load_4bit else "bf16", "batch": a.batch, "seq": a.seq,
        "rank": a.rank, "lora_alpha": a.scale * a.rank, "scale": a.scale, "steps": a.steps, "warmup": a.warmup,
        "grad_checkpoint": a.grad_checkpoint,
        "tokens_per_s": a.batch * a.seq * a.steps / dt, "s_per_step": dt / a.steps,
        "peak_mem_gb": torch.cuda.max_memory_allocated() / 1e9, "last_loss": float(loss),
        "trainable": sum(p.numel() for p in params), "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
    }
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
