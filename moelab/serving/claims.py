"""
The claims audit: every number in the source articles (seeds 000-004, /work/shared/seeds/) that
can be recomputed here, recomputed by moelab's own functions, with verdict and working.

    >>> from moelab.serving import claims_table
    >>> df = claims_table()
    >>> df.loc["000-cost-95", "verdict"]
    'wrong'
    >>> df.loc["001-gpt-3.5-mmlu", ["recomputed", "verdict"]].tolist()
    ['70.0% (Table 3)', 'agrees with the paper']

Verdicts: "right" (recomputes within rounding), "wrong" (arithmetic or physics says otherwise),
"impossible" (the setup cannot exist as described), "disagrees with the paper" / "agrees with the
paper" (benchmark scores against Jiang et al. 2024, arXiv:2401.04088v1, Tables 1-3; a score agrees
when it equals the paper's in any setting the paper reports), "plausible" (consistent with a bound,
not provable) and "not checkable here" (needs prices, runs or data we do not have). Rows whose id
starts with "all-" set the sources against each other. The paper's scores are `PAPER_SCORES`
(where they were checked: `PAPER_SCORES_VERIFIED`).
"""

from __future__ import annotations

import math

PAPER = "Jiang et al. 2024, Mixtral of Experts, arXiv:2401.04088v1"

# The paper's benchmark scores, (model, benchmark) -> ((value %, where), ...). Table 2 evaluates
# commonsense tasks 0-shot, HumanEval 0-shot, MBPP 3-shot, GSM8K 8-shot maj@8 (§3's list);
# Table 3 gives its own settings in its row names.
PAPER_SCORES: dict[tuple[str, str], tuple[tuple[float, str], ...]] = {
    ("Mixtral", "MMLU"): ((70.6, "Table 2"), (70.6, "Table 3")),
    ("Mixtral", "HellaSwag"): ((84.4, "Table 2, 0-shot"), (86.7, "Table 3, 10-shot")),
    ("Mixtral", "WinoGrande"): ((77.2, "Table 2, 0-shot"), (81.2, "Table 3, 5-shot")),
    ("Mixtral", "ARC Challenge"): ((59.7, "Table 2, 0-shot"), (85.8, "Table 3, 25-shot")),
    ("Mixtral", "HumanEval"): ((40.2, "Table 2, 0-shot"),),
    ("Mixtral", "MBPP"): ((60.7, "Table 2"), (60.7, "Table 3")),
    ("Mixtral", "GSM8K"): ((74.4, "Table 2, maj@8"), (58.4, "Table 3, 5-shot")),
    ("Llama 2 70B", "MMLU"): ((69.9, "Table 2"), (69.9, "Table 3")),
    ("Llama 2 70B", "HellaSwag"): ((85.4, "Table 2, 0-shot"), (87.1, "Table 3, 10-shot")),
    ("Llama 2 70B", "WinoGrande"): ((80.4, "Table 2, 0-shot"), (83.2, "Table 3, 5-shot")),
    ("Llama 2 70B", "ARC Challenge"): ((56.5, "Table 2, 0-shot"), (85.1, "Table 3, 25-shot")),
    ("Llama 2 70B", "HumanEval"): ((29.3, "Table 2, 0-shot"),),
    ("Llama 2 70B", "MBPP"): ((49.8, "Table 2"), (49.8, "Table 3")),
    ("Llama 2 70B", "GSM8K"): ((69.6, "Table 2, maj@8"), (53.6, "Table 3, 5-shot")),
    ("GPT-3.5", "MMLU"): ((70.0, "Table 3"),),
    ("GPT-3.5", "HellaSwag"): ((85.5, "Table 3, 10-shot"),),
    ("GPT-3.5", "WinoGrande"): ((81.6, "Table 3, 5-shot"),),
    ("GPT-3.5", "ARC Challenge"): ((85.2, "Table 3, 25-shot"),),
    ("GPT-3.5", "MBPP"): ((52.2, "Table 3"),),
    ("GPT-3.5", "GSM8K"): ((57.1, "Table 3, 5-shot"),),
    ("Mistral 7B", "MMLU"): ((62.5, "Table 2"),),
    ("Mistral 7B", "HellaSwag"): ((81.0, "Table 2, 0-shot"),),
    ("Mistral 7B", "WinoGrande"): ((74.2, "Table 2, 0-shot"),),
    ("Mistral 7B", "ARC Challenge"): ((54.9, "Table 2, 0-shot"),),
    ("Mistral 7B", "HumanEval"): ((26.2, "Table 2, 0-shot"),),
    ("Mistral 7B", "MBPP"): ((50.2, "Table 2"),),
    ("Mistral 7B", "GSM8K"): ((50.0, "Table 2, maj@8"),),
}
PAPER_SCORES_VERIFIED = (
    "Every value checked against the full transcription of arXiv:2401.04088v1 that moelab.papers.VERIFIED "
    "names (search-index file id 70869334435): Table 2 on page 4 of 13 (rows LLaMA 2 70B, Mistral 7B, "
    "Mixtral 8x7B; columns MMLU, HellaS, WinoG, Arc-c, HumanE, MBPP, GSM8K), Table 3 on page 5 (LLaMA 2 70B, "
    "GPT-3.5, Mixtral 8x7B), settings from §3's task list on page 3. The paper has no TruthfulQA, no "
    "HumanEval for GPT-3.5 and no SWE-bench.")


def _slug(s):
    return s.lower().replace(" ", "-")


def _paper_score(model, bench):
    """'70.6% (Table 2 and Table 3)' / '84.4% (Table 2, 0-shot) / 86.7% (Table 3, 10-shot)' and the
    values, or None when the paper has no such score."""
    got = PAPER_SCORES.get((model, bench))
    if not got:
        return None
    by_value: dict[float, list[str]] = {}
    for v, where in got:
        by_value.setdefault(v, []).append(where)
    return " / ".join(f"{v}% ({' and '.join(w)})" for v, w in by_value.items()), list(by_value)


def _llama2(size):
    from transformers import LlamaConfig

    # Llama 2 (Touvron et al. 2023, arXiv:2307.09288; config.json of meta-llama/Llama-2-{13b,70b}-hf).
    # count_params gives 13.02 B and 68.98 B.
    if size == 70:
        return LlamaConfig(vocab_size=32000, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                           num_attention_heads=64, num_key_value_heads=8, tie_word_embeddings=False)
    return LlamaConfig(vocab_size=32000, hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                       num_attention_heads=40, num_key_value_heads=40, tie_word_embeddings=False)


def _llama2_70b():
    return _llama2(70)


def _rows():
    from ..compute import (check_memory_claim, count_params, decode_roofline, get_hardware, mistral_7b_config,
                           mixtral_8x7b_config, router_share, weight_bytes, weight_bytes_read)
    from .economics import (blended_price, break_even_volume, implied_ratio, max_cache_size, quantised_bytes_per_param,
                            self_hosted_monthly, usd_per_million)

    mx, m7, l70, l13 = mixtral_8x7b_config(), mistral_7b_config(), _llama2(70), _llama2(13)
    pm, p7, pl, p13 = count_params(mx), count_params(m7), count_params(l70), count_params(l13)
    a100, rtx = get_hardware("A100-80GB-SXM"), get_hardware("RTX-4090")
    cap, cap4090 = a100.memory_bytes / 1e9, rtx.memory_bytes / 1e9
    R = []

    def add(id_, seed, claim, recomputed, verdict, working):
        R.append(dict(id=id_, source=f"seed {seed}", claim=claim, recomputed=recomputed, verdict=verdict,
                      working=working))

    def score(id_, seed, model, bench, said, extra=""):
        got = _paper_score(model, bench)
        name = "" if model == "Mixtral" else f"{model} "
        if got is None:
            add(id_, seed, f"{name}{bench} {said}%", "-", "not checkable here",
                f"{PAPER} reports no {bench} score for {model}" + (f"; {extra}" if extra else ""))
            return
        rec, vals = got
        ok = any(abs(said - v) < 0.05 for v in vals)
        add(id_, seed, f"{name}{bench} {said}%", rec, "agrees with the paper" if ok else "disagrees with the paper",
            f"{PAPER}, {rec}" + ("" if ok else f"; {said}% matches no setting the paper reports")
            + (f"; {extra}" if extra else ""))

    # ---- seed 000: the A100 benchmark post
    c95 = usd_per_million(95, 1.29)
    add("000-cost-95", "000", "95 tok/s at $1.29/h = $0.16 per M tokens (headline: $0.18)", f"${c95:.2f}/M", "wrong",
        f"1.29 / (3600 x 95) x 1e6 = {c95:.2f}; the post's own $0.00000377 per token is right, the x1e6 step is not "
        f"(off by {c95 / 0.16:.0f}x); headline $0.18 and table $0.16 also disagree")
    add("000-per-token", "000", "95 tok/s = 342,000 tokens/hour; at $1.29/h that is $0.00000377 per token",
        f"{95 * 3600:,} tokens/h; ${1.29 / (95 * 3600):.8f} per token", "right",
        f"95 x 3600 = {95 * 3600:,}; 1.29 / {95 * 3600:,} = {1.29 / (95 * 3600):.3e} (the next step, x1e6, gives "
        f"${c95:.2f}/M, not $0.16: row 000-cost-95)")
    add("000-tokens-hour", "000", "95 tok/s is 'about 8.2 million tokens per hour'", f"{95 * 3600:,} per hour",
        "wrong", f"95 x 3600 = {95 * 3600:,}/h; 8.2 M is one day ({95 * 3600 * 24 / 1e6:.2f} M)")
    add("000-exp-cost", "000", "72 h at $1.29/h cost $92.88", f"${72 * 1.29:.2f}", "right", "72 x 1.29")
    lat = [(1, 24, 42), (4, 42, 95), (8, 51, 156), (16, 80, 201), (32, 147, 218)]
    worst = max(abs(b / (ms / 1000) - t) / t for b, ms, t in lat)
    add("000-latency", "000", "p50 latency 24/42/51/80/147 ms per token at batch 1/4/8/16/32 vs 42/95/156/201/218 tok/s",
        f"batch / latency = {', '.join(f'{b / (ms / 1000):.0f}' for b, ms, _ in lat)} tok/s", "right",
        f"throughput = batch / per-token latency, within {worst:.1%} at every batch")
    mc = check_memory_claim(mx, "fp16", "A100-80GB-SXM", (87, 91))
    add("000-vram", "000", "Mixtral FP16 on one A100 80GB using 87-91 GB VRAM",
        f"weights {weight_bytes(mx, 'fp16') / 1e9:.1f} GB > card {cap:.1f} GB", "impossible", mc.verdict.split("\n")[0])
    roof = decode_roofline(mx, a100, [1, 4, 32], context=512, dtype="fp16")
    add("000-throughput", "000", "42 / 95 / 218 tok/s at batch 1 / 4 / 32 (FP16, one A100)",
        "roofline " + " / ".join(f"{t:.0f}" for t in roof.tokens_per_s) + " tok/s", "plausible",
        "below the one-A100 decode roofline at every batch (decode_roofline, 512-token context), but FP16 weights "
        "do not fit one card: the numbers need 2 GPUs or 8-bit weights")
    # break-even: the post's "dedicated A100, 30-day amortized rental, 70% utilization" -> 720 h
    H, U = 24 * 30, 0.7
    vols = [1e7, 1e8, 5e8, 1e9, 1e10]
    gpu_month = 1.29 * H
    gpu_cap = 95 * 3600 * H * U
    sh = [self_hosted_monthly(v, 95, 1.29, utilisation=U, hours_per_month=H) for v in vols]
    used = [self_hosted_monthly(v, 95, 1.29, utilisation=U, hours_per_month=H, dedicated=False) for v in vols]
    bev = break_even_volume(1.50, 95, 1.29, utilisation=U, hours_per_month=H)
    add("000-break-even", "000", "self-hosted $120/$155/$240/$360/$2,300 per month at 10M/100M/500M/1B/10B tokens; "
        "crossover ~100M tokens/month vs GPT-3.5 at $1.50/M",
        "self-hosted " + " / ".join(f"${c:,.2f}" for c in sh) + "; break-even: "
        + ("never" if math.isinf(bev) else f"{bev / 1e6:,.0f} M"), "wrong",
        f"dedicated A100s as stated, 30-day rental = 30 x 24 = {H} h, 70% utilisation: one GPU is 1.29 x {H} = "
        f"${gpu_month:,.2f}/month and serves 95 x 3600 x {H} x 0.7 = {gpu_cap / 1e6:.1f} M tokens, so "
        + ", ".join(f"{math.ceil(v / gpu_cap)}" for v in vols) + " GPUs for the five volumes; even paying only for "
        "the hours used it is " + " / ".join(f"${c:,.0f}" for c in used) + f" (marginal cost "
        f"{usd_per_million(95 * U, 1.29):.2f} $/M > $1.50/M), so the API is cheaper at every volume; the "
        "post's $120 for 10M tokens is below one GPU-month")
    api = [v / 1e6 * 1.50 for v in vols]
    said_sh = [120, 155, 240, 360, 2300]
    add("000-break-even-api", "000", "GPT-3.5 API $15/$150/$750/$1,500/$15,000 and savings -$105/-$5/+$510/+$1,140/+$12,700 "
        "at 10M/100M/500M/1B/10B tokens", " / ".join(f"${c:,.0f}" for c in api) + "; savings "
        + " / ".join(f"{a - b:+,.0f}" for a, b in zip(api, said_sh)), "right",
        "volume x $1.50/M and API minus the post's own self-hosted column: right arithmetic, on a self-hosted column "
        "that is wrong (row 000-break-even)")
    ratio = 1.50 / c95
    add("000-9x", "000", "self-hosted is ~9x cheaper than GPT-3.5 output ($1.50/M), 3.7x cheaper than Together ($0.60/M)",
        f"{ratio:.2f}x and {0.60 / c95:.2f}x (i.e. {1 / ratio:.1f}x and {c95 / 0.60:.1f}x MORE expensive)", "wrong",
        "ratios of the API prices to the recomputed $3.77/M")
    rp = usd_per_million(95, 0.80)
    add("000-runpod", "000", "an A100 on RunPod at ~$0.80/h makes self-hosting even more favourable",
        f"${rp:.2f}/M at 95 tok/s", "wrong",
        f"0.80 / (3600 x 95) x 1e6 = {rp:.2f}: cheaper than $3.77/M but still {rp / 1.50:.1f}x GPT-3.5 output "
        f"($1.50/M) and {rp / 0.60:.1f}x Together ($0.60/M); the post's comparison rests on its $0.16/M")
    r9 = implied_ratio(0.50, 1.50, 0.60)
    add("000-together-2.5x", "000", "Together AI ($0.60/M) is 2.5x cheaper than GPT-3.5-turbo",
        f"{1.50 / 0.60:.1f}x against output ($1.50/M); {0.50 / 0.60:.2f}x against input ($0.50/M)", "right",
        f"1.50 / 0.60 = {1.50 / 0.60:.1f}, against the output price only: for input tokens Together is dearer; "
        f"GPT-3.5 blended (r x 0.50 + 1.50) / (r + 1) drops below $0.60 above r = {r9:.0f} input tokens per output token")
    add("000-pages", "000", "100M tokens is approximately 75,000 pages of text",
        f"{1e8 / 75000:,.0f} tokens per page", "not checkable here",
        f"1e8 / 75,000 = {1e8 / 75000:,.0f} tokens/page, about {1e8 / 75000 * 0.75:,.0f} words at 0.75 words per "
        "token; the post states no page size or tokenizer (a 500-word page would make it 150,000 pages)")
    wins = {"Factual Q&A": (46, 41, 13), "Summarization": (38, 52, 10), "Code generation": (43, 48, 9),
            "Creative writing": (51, 39, 10), "Instruction following": (40, 49, 11)}
    means = [sum(w[i] for w in wins.values()) / len(wins) for i in range(3)]
    sums = {sum(w) for w in wins.values()}
    add("000-winrate-overall", "000", "overall win rates 43.6% / 45.8% / 10.6% tie (Mixtral / GPT-3.5) over five task types",
        " / ".join(f"{m:.1f}%" for m in means), "right",
        "unweighted mean of the five task rows (equal shares of the 200 prompts, 40 each); every row sums to "
        + "/".join(f"{x}" for x in sorted(sums)) + "%")
    p1, p2, n = means[0] / 100, means[1] / 100, 200
    se = math.sqrt((p1 + p2 - (p1 - p2) ** 2) / n) * 100  # s.e. of a difference of two multinomial shares
    gap = (p2 - p1) * 100
    add("000-winrate-edge", "000", "GPT-3.5-turbo still has a slight edge overall (45.8% vs 43.6%, 200 prompts)",
        f"gap {gap:.1f} points, standard error {se:.1f}", "plausible",
        f"s.e. of p2 - p1 over n = 200 multinomial draws: sqrt((p1 + p2 - (p1 - p2)^2) / n) = {se:.1f} points; 95% "
        f"interval [{gap - 1.96 * se:+.1f}, {gap + 1.96 * se:+.1f}]: the eval cannot tell the two apart")
    add("000-4090", "000", "2x RTX 4090 self-hosted at ~$0.09/M", "no throughput or price given", "not checkable here",
        f"FP16 weights ({weight_bytes(mx, 'fp16') / 1e9:.0f} GB) cannot fit 2x24 GiB; int4 "
        f"({pm.total * quantised_bytes_per_param('int4') / 1e9:.1f} GB with group-128 fp16 scales) can, but the $/h "
        "and tok/s are not stated")
    m_mx, m_gpt = _paper_score("Mixtral", "MMLU"), _paper_score("GPT-3.5", "MMLU")
    add("000-mmlu", "000", "Mixtral MMLU 70.6%, GPT-3.5 70.0%", f"{m_mx[0]}; {m_gpt[0]}",
        "agrees with the paper" if 70.6 in m_mx[1] and 70.0 in m_gpt[1] else "disagrees with the paper",
        f"{PAPER}, Table 3 (both), Table 2 (Mixtral)")
    add("000-active", "000", "Mixtral only uses 12.9B active parameters (to match a model with 'likely 100B+')",
        f"{pm.active / 1e9:.2f}B", "right", "count_params(mixtral_8x7b_config()).active; GPT-3.5's size is not "
        "published, so '100B+' is not checkable here")

    # ---- seed 001: the economics explainer
    add("001-params", "001", "46.7B total, ~12.9B active", f"{pm.total / 1e9:.2f}B / {pm.active / 1e9:.2f}B", "right",
        "count_params(mixtral_8x7b_config()); seeds 003 and 004 give the same pair")
    add("001-dense-table", "001", "7B: ~14 GB FP16, compute 1x; 13B: ~26 GB, ~1.9x; Mixtral ~12.9B of 46.7B (~28%) active",
        f"{7 * 2} GB, {13 * 2} GB, {13 / 7:.2f}x; {pm.active / pm.total:.1%}", "right",
        "2 bytes per parameter; 13 / 7; active / total from count_params")
    add("001-8x7", "001", "8 expert networks, each roughly 7B parameters",
        f"one expert (all 32 layers) is {pm.experts.total / 8 / 1e9:.2f}B", "wrong",
        f"8 x 7B would be 56B, not 46.7B: the experts hold {pm.experts.total / 1e9:.1f}B and attention and "
        "embeddings are shared (the paper's abstract: 'the same architecture as Mistral 7B, with the difference that "
        "each layer is composed of 8 feedforward blocks'); same as row 004-8x7")
    add("001-mem", "001", "FP16: Mixtral ~90 GB, Llama 2 70B ~130 GB, Llama 2 13B ~26 GB, Mistral 7B ~14.5 GB",
        f"{weight_bytes(mx, 'fp16') / 1e9:.1f} / {weight_bytes(l70, 'fp16') / 1e9:.1f} / "
        f"{weight_bytes(l13, 'fp16') / 1e9:.1f} / {weight_bytes(m7, 'fp16') / 1e9:.1f} GB", "plausible",
        f"weights only, 2 bytes each; Llama 2 70B's {weight_bytes(l70, 'fp16') / 1e9:.0f} GB is "
        f"{weight_bytes(l70, 'fp16') / 2 ** 30:.1f} GiB, so '~130' reads as GiB; Mixtral's '~90' sits between "
        f"{weight_bytes(mx, 'fp16') / 2 ** 30:.1f} GiB and {weight_bytes(mx, 'fp16') / 1e9:.1f} GB")

    def int4_gb(c, p):  # int4 + fp16 scale per 128 weights; and with fp16 input embeddings and output head
        q = quantised_bytes_per_param("int4")
        lo = p.total * q
        return lo / 1e9, (lo + 2 * c.vocab_size * c.hidden_size * (2 - q)) / 1e9

    q4 = {n: int4_gb(c, p) for n, c, p in (("Mistral 7B", m7, p7), ("Llama 2 13B", l13, p13), ("Mixtral", mx, pm),
                                            ("Llama 2 70B", l70, pl))}
    said4 = {"Mistral 7B": 4.3, "Llama 2 13B": 7.5, "Mixtral": 26, "Llama 2 70B": 38}
    add("001-mem-4bit", "001", "4-bit: Mistral 7B ~4.3 GB, Llama 2 13B ~7.5 GB, Mixtral ~26 GB, Llama 2 70B ~38 GB",
        " / ".join(f"{lo:.1f}-{hi:.1f}" for lo, hi in q4.values()) + " GB", "plausible",
        "int4 weights + one fp16 scale per 128 weights (quantised_bytes_per_param), the upper figure with fp16 "
        "embeddings and output head as GPTQ/AWQ files keep them; the claims are "
        + ", ".join(f"{said4[n] / hi - 1:.0%}" for n, (lo, hi) in q4.items())
        + " above the upper figure: room for KV cache and runtime overhead, not weights alone")
    fits = {n: (weight_bytes(c, "fp16") / 1e9 <= cap4090, q4[n][1] <= cap4090)
            for n, c in (("Mistral 7B", m7), ("Llama 2 13B", l13), ("Llama 2 70B", l70))}
    add("001-fits-4090", "001", "on an RTX 4090 (24 GB): Mistral 7B fits FP16 and 4-bit, Llama 2 13B 4-bit only, "
        "Llama 2 70B not at all", "; ".join(f"{n}: FP16 {'yes' if a else 'no'}, 4-bit {'yes' if b else 'no'}"
                                            for n, (a, b) in fits.items()),
        "right" if fits == {"Mistral 7B": (True, True), "Llama 2 13B": (False, True), "Llama 2 70B": (False, False)}
        else "wrong",
        f"weights against {cap4090:.2f} GB (24 GiB): FP16 {weight_bytes(m7, 'fp16') / 1e9:.1f} / "
        f"{weight_bytes(l13, 'fp16') / 1e9:.1f} / {weight_bytes(l70, 'fp16') / 1e9:.1f} GB, 4-bit "
        + " / ".join(f"{q4[n][1]:.1f}" for n in fits) + " GB; Llama 2 13B FP16 misses by "
        f"{weight_bytes(l13, 'fp16') / 1e9 - cap4090:.2f} GB")
    c7, c8 = max_cache_size(mx, "RTX-4090", "int4"), max_cache_size(mx, "RTX-4090", "int4", reserve_gb=0.0)
    lo, hi = q4["Mixtral"]
    add("001-mixtral-4090", "001", "4-bit Mixtral (~26 GB) 'just barely fits' a 24 GB consumer GPU",
        f"{lo:.1f}-{hi:.1f} GB on a {cap4090:.2f} GB card", "plausible",
        f"leaves {cap4090 - hi:.1f}-{cap4090 - lo:.1f} GB for KV cache, activations and the CUDA context: barely, as "
        f"said; max_cache_size gives {c8} of 8 experts per layer with nothing reserved but {c7} with 2 GB reserved; the "
        f"post's own ~26 GB would not fit ({26 - cap4090:+.2f} GB)")
    l70_w = weight_bytes(l70, "fp16") / 1e9
    roof70 = {d: a100.bandwidth_gbs / weight_bytes_read(l70, 1, d) * 1e9 for d in ("int8", "int4")}
    add("001-llama-25", "001", "Llama 2 70B at ~25 tok/s on one A100, at FP16 (the precision of the post's memory table)",
        f"{l70_w:.0f} GB of FP16 weights on a {cap:.1f} GB card", "impossible",
        f"{l70_w:.1f} GB > {cap:.1f} GB (80 GiB): FP16 Llama 2 70B does not fit one A100 at any speed; quantised, see "
        "row 001-llama-25-quantised")
    add("001-llama-25-quantised", "001", "Llama 2 70B at ~25 tok/s on one A100, quantised to 8 or 4 bits",
        f"batch-1 roofline int8 {roof70['int8']:.0f}, int4 {roof70['int4']:.0f} tok/s", "plausible",
        f"int8 weights {weight_bytes(l70, 'int8') / 1e9:.0f} GB fit; {a100.bandwidth_gbs:.0f} GB/s / weight bytes read "
        f"per token (weight_bytes_read) = {roof70['int8']:.0f} tok/s at int8 (scales not counted): 25 tok/s is "
        f"{25 / roof70['int8']:.0%} of that bound, reachable with good kernels; the post does not say it quantised")
    roof_mx8 = a100.bandwidth_gbs / weight_bytes_read(mx, 1, "int8") * 1e9
    add("001-mixtral-55", "001", "Mixtral at ~55 tok/s on an A100", f"batch-1 roofline int8 {roof_mx8:.0f} tok/s",
        "plausible", f"FP16 ({weight_bytes(mx, 'fp16') / 1e9:.0f} GB) does not fit one A100; at int8 the batch-1 bound "
        f"is {roof_mx8:.0f} tok/s, so 55 is {55 / roof_mx8:.0%} of it. Seed 000 measured 42 tok/s at batch 1 "
        "(its FP16 setup is itself impossible, row 000-vram)")
    roof_m7 = float(decode_roofline(m7, a100, [1], context=512, dtype="fp16").tokens_per_s.iloc[0])
    add("001-mistral-150", "001", "Mistral 7B at ~150 tok/s on an A100", f"batch-1 FP16 roofline {roof_m7:.0f} tok/s",
        "plausible", f"150 is {150 / roof_m7 - 1:.0%} above one stream's FP16 bound (decode_roofline, 512-token "
        "context): it needs a batch > 1 or 8-bit weights, which the post does not state")
    add("001-active", "001", "Llama 2 70B has 65.2B active parameters; Mixtral >2x faster because 12.9B vs 65.2B",
        f"Llama 2 70B: {pl.total / 1e9:.2f}B; ratio {pl.total / pm.active:.2f}", "wrong",
        "count_params(Llama-2-70B config); if speed followed active parameters the ratio would be ~5.4x, not 2.2x "
        "(55 vs 25 tok/s); the paper's Table 2 lists 70B active for Llama 2 70B")
    costs = {}
    for name, tps, said in (("Mixtral", 55, 0.18), ("Llama 2 70B", 25, 0.40), ("Mistral 7B", 150, 0.08)):
        c = costs[name] = usd_per_million(tps, 1.50)
        add(f"001-cost-{name.split()[0].lower()}{'70' if '70' in name else ''}", "001",
            f"{name} at ~{tps} tok/s on a $1.50/h A100 = ~${said:.2f}/M", f"${c:.2f}/M", "wrong",
            f"1.50 / (3600 x {tps}) x 1e6 ({c / said:.0f}x the claim)")
    add("001-11x", "001", "self-hosted Mixtral ($0.18/M) is 11x cheaper than the GPT-3.5-turbo API ($2.00/M)",
        f"{2.00 / costs['Mixtral']:.2f}x (the API is {costs['Mixtral'] / 2.00:.1f}x cheaper)", "wrong",
        f"2.00 / {costs['Mixtral']:.2f}; 2.00 / 0.18 = {2.00 / 0.18:.1f} is right arithmetic on the wrong $0.18")
    add("001-2.2x", "001", "Mixtral is 2.2x cheaper than self-hosted Llama 2 70B ($0.18 vs $0.40) and 'over 2x faster'",
        f"{costs['Llama 2 70B'] / costs['Mixtral']:.2f}x; 55 / 25 = {55 / 25:.1f}x", "right",
        "the cost ratio at equal $/h is the speed ratio, whatever the (wrong) absolute prices")
    add("001-compute", "001", "Mixtral compute per token ~1.8x a standard 7B", f"{pm.active / p7.total:.2f}x", "right",
        "active parameters 12.88B / Mistral 7B's 7.24B")
    # the benchmark table: four models, seven benchmarks (N/A cells make no claim)
    table = {"Mixtral": (70.6, 86.5, 65.7, 77.2, 34.2, 58.4, 46.7),
             "Llama 2 70B": (68.9, 85.3, 64.6, 77.4, 29.9, 56.8, 44.9),
             "GPT-3.5": (70.0, 85.5, 85.2, None, 48.1, 57.1, None),
             "Mistral 7B": (60.1, 81.3, 55.5, 75.3, 30.5, 35.4, 42.2)}
    benches = ("MMLU", "HellaSwag", "ARC Challenge", "WinoGrande", "HumanEval", "GSM8K", "TruthfulQA")
    for model, vals in table.items():
        for bench, said in zip(benches, vals):
            if said is not None:
                id_ = f"001-{_slug(bench)}" if model == "Mixtral" else f"001-{_slug(model)}-{_slug(bench)}"
                score(id_, "001", model, bench, said,
                      "the post cites 'community evaluations', not the paper" if model != "GPT-3.5" else "")
    add("001-prices", "001", "GPT-3.5 $2.00/M, Together $0.60, Perplexity $0.28, Anyscale $0.50 (Dec 2023)",
        f"{2 / 0.60:.1f}x, {2 / 0.28:.1f}x, {2 / 0.50:.1f}x", "not checkable here",
        "historical price lists are not available offline; the ratios (3.3x, 7.1x, 4.0x) are right arithmetic on "
        "those prices; seed 000 prices GPT-3.5 at $0.50 in / $1.50 out instead (row all-gpt35-price)")

    # ---- seed 002: Fireworks
    lo, hi = blended_price(0.40, 1.60, 6), blended_price(0.40, 1.60, 4)
    add("002-blend", "002", "$0.40/M prompt, $1.60/M generation at 4:1 to 6:1 average ~$0.60/M",
        f"${lo:.3f}-${hi:.3f}/M", "right", "(r x 0.40 + 1.60) / (r + 1) for r = 6 and 4")
    add("002-summ", "002", "summarization averages ~$0.45/M", f"implies {implied_ratio(0.40, 1.60, 0.45):.0f}:1 prompt:generation",
        "plausible", "solve (r x 0.40 + 1.60) / (r + 1) = 0.45; long inputs, short summaries")
    one = {g: get_hardware(g).bandwidth_gbs / weight_bytes_read(mx, 1, "fp16") * 1e9 for g in ("A100-80GB-SXM", "H100-SXM")}
    add("002-175", "002", "175 tok/s for Mixtral at 16 bits (latency-optimised)",
        f"one-GPU batch-1 roofline: A100 {one['A100-80GB-SXM']:.0f}, H100 {one['H100-SXM']:.0f} tok/s", "plausible",
        f"above any single GPU's bound (and FP16 needs {weight_bytes(mx, 'fp16') / 1e9:.0f} GB > 80 GiB anyway); reachable "
        f"with >= 2 H100s in tensor parallel (2 x {one['H100-SXM']:.0f} = {2 * one['H100-SXM']:.0f}), which the post implies "
        "('flexible parallelization schemes') but does not state")
    add("002-playground", "002", "the public API under moderate load runs at 80-100 tok/s per stream",
        f"below the 175 tok/s latency-optimised figure and the 2-H100 bound ({2 * one['H100-SXM']:.0f})", "plausible",
        "a loaded server shares each weight read across the batch, so per-stream speed falls below the batch-1 figure")

    # ---- seed 003: the opinion piece
    rs = router_share(mx)
    add("003-gating", "003", "gate logits for 8 experts add ~10% compute", f"{rs:.4%} of decode FLOPs", "wrong",
        "router_share(mixtral_8x7b_config()): one 4096x8 matmul per layer")
    add("003-8bit-40", "003", "8-bit reduces memory by ~40% vs 16-bit",
        f"{1 - weight_bytes(mx, 'int8') / weight_bytes(mx, 'fp16'):.0%}", "wrong", "1 byte vs 2 bytes per weight")
    w8 = weight_bytes(mx, "int8") / 1e9
    add("003-two-copies", "003", "two full 8-bit model copies fit in 80 GB", f"{w8:.1f} GB each, {2 * w8:.1f} GB for two",
        "impossible", f"2 x {w8:.1f} = {2 * w8:.1f} GB > {cap:.1f} GB (80 GiB), before any KV cache")
    b1 = weight_bytes_read(l70, 1, "fp16") / weight_bytes_read(mx, 1, "fp16")
    bN = weight_bytes_read(l70, 64, "fp16") / weight_bytes_read(mx, 64, "fp16")
    add("003-6x", "003", "6x faster than Llama 2 70B", f"<= {b1:.1f}x at batch 1, ~{bN:.1f}x at batch 64", "wrong",
        "memory-bound decode: ratio of weight bytes read per step (weight_bytes_read); a batch that touches every "
        "expert reads all 46.7B parameters")
    add("003-one-third", "003", "outperforms Llama 2 70B 'at roughly one-third the inference cost'",
        f"cost ratio {1 / b1:.2f} at batch 1 to {1 / bN:.2f} at batch 64; FLOPs {pm.active / pl.total:.2f}", "plausible",
        f"memory-bound decode costs what it reads: {1 / b1:.2f} (2 of 8 experts) to {1 / bN:.2f} (all experts) of "
        f"Llama 2 70B's bytes per step; compute-bound, the active-parameter ratio {pm.active / pl.total:.2f}; 1/3 "
        "lies inside that range. The same piece's '6x faster' (1/6) does not (row 003-6x). The paper's Table 2 "
        "caption says '5x fewer active parameters'")
    for bench, said, said70, where in (("HumanEval", 75.4, 68.2, "HumanEval"), ("MBPP", 81.3, 74.6, "MBPP")):
        mx_s, l_s = _paper_score("Mixtral", where), _paper_score("Llama 2 70B", where)
        add(f"003-{bench.lower()}", "003", f"{bench} {said}% vs Llama 2 70B {said70}%", f"{mx_s[0]} vs {l_s[0]}",
            "disagrees with the paper", f"{PAPER}; both scores differ from every setting the paper reports")
    add("003-34b", "003", "the 'effective parameter count is similar to Llama 2 34B'", "-", "not checkable here",
        "'effective parameter count' is not defined; Llama 2 34B was never released: the paper's footnote 2 "
        "('Since Llama 2 34B was not open-sourced, we report results for Llama 1 34B')")
    add("003-training", "003", "Mixtral used DeepSpeed-MoE's top-2 routing with a load-balancing loss", "-",
        "not checkable here", "top-2 routing agrees with the paper (Table 1, top_k_experts 2); the rest is not in it: "
        "the paper states no auxiliary load-balancing loss, capacity factor or z-loss (moelab.papers.MIXTRAL"
        "['training_loss']) and points to mistral-src and vLLM with Megablocks kernels, not DeepSpeed-MoE")
    add("003-aws", "003", "p3.8xlarge at $0.0012 / 1k tokens vs Claude $0.0035", "-", "not checkable here",
        "no throughput or instance price given (p3.8xlarge is 4x V100 16GB, not the A100s the piece describes)")

    # ---- seed 004: the release summary
    add("004-8x7", "004", "eight 7-billion-parameter experts (46.7B total)",
        f"8 x 7B = 56B; experts hold {pm.experts.total / 1e9:.1f}B", "wrong",
        f"each expert is {pm.experts.total / 8 / 1e9:.2f}B over 32 layers; attention and embeddings are shared")
    add("004-ctx", "004", "32,768-token context window", "32768", "agrees with the paper", f"{PAPER}, Table 1")
    for bench, said in (("MMLU", 82.0), ("HumanEval", 67.0), ("GSM8K", 67.4)):
        score(f"004-{bench.lower()}", "004", "Mixtral", bench, said)
    add("004-swe", "004", "SWE-bench 15.2; API $0.54/M in and out", "-", "not checkable here",
        "not in the paper; provider price not available offline")
    add("004-dense-price", "004", "dense models of equal performance are often priced 2-3x higher", "-",
        "not checkable here", "no models or prices named")

    # ---- the sources against each other
    mm = _paper_score("Mixtral", "MMLU")
    add("all-mmlu", "000/001/004", "Mixtral MMLU 70.6% (seeds 000, 001) vs 82.0% (seed 004)", mm[0],
        "disagrees with the paper", f"000 and 001 agree with {PAPER} ({mm[0]}); 004's 82.0% matches no table")
    gs = _paper_score("Mixtral", "GSM8K")
    add("all-gsm8k", "001/004", "Mixtral GSM8K 58.4% (seed 001) vs 67.4% (seed 004)", gs[0], "disagrees with the paper",
        f"001 matches the paper's 5-shot score, 004 matches neither setting ({PAPER})")
    he = _paper_score("Mixtral", "HumanEval")
    add("all-humaneval", "001/003/004", "HumanEval 34.2% / 75.4% / 67%", he[0], "disagrees with the paper",
        f"three sources, three values, none the paper's ({PAPER}, {he[0]})")
    hl = _paper_score("Llama 2 70B", "HumanEval")
    add("all-llama-humaneval", "001/003", "Llama 2 70B HumanEval 29.9% (seed 001) vs 68.2% (seed 003)", hl[0],
        "disagrees with the paper", f"001 is 0.6 points off the paper, 003 more than double it ({PAPER}, {hl[0]})")
    add("all-gpt35-price", "000/001", "GPT-3.5-turbo costs $2.00/M (seed 001, Dec 2023) vs $0.50 in / $1.50 out (seed 000, "
        "Jan 2024)", f"001's $2.00 is above both of 000's prices: any input/output mix of 000's prices costs "
        f"${blended_price(0.50, 1.50, 1e9):.2f}-${blended_price(0.50, 1.50, 0):.2f}/M", "not checkable here",
        "the sources disagree (a price change between the two dates would explain it); historical price lists "
        "are not available offline")
    add("all-release-date", "002/003/004", "the magnet link dropped on December 11th (seed 003)",
        "seed 002 (dated Thu 14 Dec 2023) puts the torrent 'last Friday' = Fri 8 Dec 2023 and the official "
        "Instruct release 'the following Monday' = Mon 11 Dec", "not checkable here",
        "the sources disagree: 003 dates the torrent to 11 Dec, 004 dates the release to 11 Dec, 002's own dating puts "
        "the torrent three days earlier; the paper (v1, 8 Jan 2024) gives no date and no offline record settles it")
    return R


def claims_table():
    """DataFrame indexed by claim id: source, claim, recomputed, verdict, working."""
    import pandas as pd

    return pd.DataFrame(_rows()).set_index("id")
