"""What the papers themselves report, typed in with where each number or statement comes from.

    >>> from moelab.papers import MIXTRAL, mixtral_table5
    >>> MIXTRAL["table5"].source
    'Mixtral paper (Jiang et al. 2024, arXiv:2401.04088v1), §5, Table 5'
    >>> float(mixtral_table5().loc["ArXiv", ("first", 15)])      # % of consecutive pairs, layer 15
    27.9

Each `PaperEntry` holds a value (a number, a table, or a paraphrased statement), its source
(paper, section, table or figure) and a note on how to read it. A plot of the tiny model puts
these beside its own numbers so a learner always sees what real Mixtral / OLMoE showed.
Rules kept here: nothing the paper does not say is attributed to it (quotes are marked as
such, paraphrases say so); a number that could not be checked against the paper is left out
rather than guessed. `VERIFIED` records where each number and quote was checked.

Mixtral: Jiang et al. 2024, "Mixtral of Experts", arXiv:2401.04088.
OLMoE:   Muennighoff et al. 2024, "OLMoE: Open Mixture-of-Experts Language Models", arXiv:2409.02060.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

__all__ = ["PaperEntry", "MIXTRAL", "OLMOE", "VERIFIED", "mixtral_table5", "olmoe_saturation_reference", "cite"]

_MX = "Mixtral paper (Jiang et al. 2024, arXiv:2401.04088v1)"
_OL = "OLMoE paper (Muennighoff et al. 2024, arXiv:2409.02060)"


@dataclass(frozen=True)
class PaperEntry:
    value: Any                 # a number, a dict/table, or a statement (str)
    source: str                # paper, section, table or figure
    note: str = ""             # how to read it; "paraphrase" when the words are ours


def _table5() -> dict:
    # One transcription for the whole library: moelab.serving.synthetic calibrates its Mixtral-like
    # router to the same table. domain -> (first @ 0, 15, 31, first-or-second @ 0, 15, 31), in %.
    from .serving.synthetic import TABLE5

    return dict(TABLE5)


# Where the typed-in numbers were checked (issue 17). The session could read public transcriptions
# of the papers through its search index, not the PDFs; each is named by the index's file id
# (the index does not return the repository path of these files) or by its web address.
VERIFIED = {
    "mixtral_table5": (
        "All 48 values checked against a full transcription of arXiv:2401.04088v1 (a public GitHub "
        "Markdown file, 'Mixtral 8x7B · 对照译稿', page 8 of 13, Table 5 with the PDF's header layout; "
        "search-index file id 70869334435); the first-choice rows of ArXiv, Github and Wikipedia (en) "
        "also against two partial transcriptions (file ids 60940230680, 58013808762). No difference found."),
    "mixtral_section5_text": (
        "§5 text, Figure 7, 8 and Table 5 captions quoted from the same transcription (file id 70869334435); "
        "the §5 prose also at https://textmodels.tech/routing-analysis-reveals-expert-selection-patterns-in-mixtral"),
    "olmoe_section5": (
        "§2 (Equation 1, Table 1) and §5.1-§5.4 (Equations 5-8, Figures 20-23) quoted from three public "
        "full-text transcriptions of arXiv:2409.02060 that agree word for word on §5.1 (search-index file ids "
        "54697412003 [the version with Appendix J 'Change log'], 71014424048, 62129693863) and from reading notes "
        "of v1 with page numbers (file id 2624387043, §5.1 on p. 19)."),
}


MIXTRAL: dict[str, PaperEntry] = {
    "table5": PaperEntry(
        _table5(), f"{_MX}, §5, Table 5",
        "Table 5: 'Percentage of expert assignment repetitions. We evaluate the proportion of times the same "
        "expert is assigned to a token i and its following token i+1. We report whether the first chosen expert "
        "is the same, or whether the same expert is observed as first or second choice in consecutive tokens.' "
        "On subsets of The Pile, layers 0, 15 and 31: 'first' = same first choice, 'any' = first or second "
        "choice. Values in %; see `mixtral_table5()`. Shared with moelab.serving.synthetic.TABLE5. "
        "Verified: " + VERIFIED["mixtral_table5"]),
    "table5_random": PaperEntry(
        {"first": 12.5, "any": 46.0}, f"{_MX}, §5, Table 5 caption",
        "'the expected proportion of repetitions in the case of random assignments is 1/8 = 12.5% for \"First "
        "choice\" and 1 - 6/8 5/7 ≈ 46% for \"First and second choice\"' (the caption says 'and', the table "
        "header 'First or second choice'; 1 - C(6,2)/C(8,2) = 46.4 % is the 'or' event). Uniform loads only: "
        "moelab.metrics.baselines gives the load-aware levels."),
    "table5_layers": PaperEntry((0, 15, 31), f"{_MX}, §5, Table 5 and Figure 7",
                                "the three layers analysed, of 32 ('layers 0 and 31 respectively being the first "
                                "and the last layers of the model')"),
    "locality": PaperEntry(
        "'Repetitions at the first layer are close to random, but are significantly higher at layers 15 and "
        "31. The high number of repetitions shows that expert choice exhibits high temporal locality at these "
        "layers.'", f"{_MX}, §5, Table 5 caption",
        "quoted. §5 adds: 'The proportion of repeated consecutive assignments is significantly higher than "
        "random for higher layers.' The paper compares with random assignment, not with a load-aware "
        "baseline; one cell is below its random level (DM Mathematics, layer 31, first or second choice: "
        "44.5 % < 46 %)."),
    "figure7_domains": PaperEntry(
        "'Surprisingly, we do not observe obvious patterns in the assignment of experts based on the topic. "
        "For instance, at all layers, the distribution of expert assignment is very similar for ArXiv papers "
        "(written in Latex), for biology (PubMed Abstracts), and for Philosophy (PhilPapers) documents.'",
        f"{_MX}, §5, Figure 7",
        "quoted. Figure 7 counts experts 'either selected as a first or second choice by the router' and draws "
        "1/8 as 'the proportion expected with uniform sampling'. The paper says the domains' distributions are "
        "similar to each other; it does not state that the load is uniform (the bars are read off the figure)."),
    "figure7_dm_math": PaperEntry(
        "'Only for DM Mathematics we note a marginally different distribution of experts. This divergence is "
        "likely a consequence of the dataset's synthetic nature and its limited coverage of the natural "
        "language spectrum, and is particularly noticeable at the first and last layers, where the hidden "
        "states are very correlated to the input and output embeddings respectively.'",
        f"{_MX}, §5, Figure 7", "quoted"),
    "figure8_syntax": PaperEntry(
        "'words such as ‘self’ in Python and ‘Question’ in English often get routed through the same expert "
        "even though they involve multiple tokens. Similarly, in code, the indentation tokens are always "
        "assigned to the same experts, particularly at the first and last layers where the hidden states are "
        "more correlated to the input and output of the model.'", f"{_MX}, §5, Figure 8",
        "quoted. Figure 8 caption: 'Text samples where each token is colored with the first expert choice. The "
        "selection of experts appears to be more aligned with the syntax rather than the domain, especially at "
        "the initial and final layers.'"),
    "training_loss": PaperEntry(
        None, f"{_MX}, the whole paper",
        "The paper does not describe Mixtral's training objective: no auxiliary load-balancing loss, "
        "capacity factor or z-loss is stated. Do not attribute one to it."),
    "params": PaperEntry({"total_B": 47, "active_B": 13}, f"{_MX}, abstract",
                         "'each token has access to 47B parameters, but only uses 13B active parameters during "
                         "inference'; rounded: moelab.compute.count_params gives 46.70 B and 12.88 B"),
    "top_k": PaperEntry({"experts": 8, "top_k": 2}, f"{_MX}, §2.1 and Table 1",
                        "Table 1: num_experts 8, top_k_experts 2; §2.1: 'we use the same SwiGLU architecture as "
                        "the expert function E_i(x) and set K = 2'"),
}

OLMOE: dict[str, PaperEntry] = {
    "architecture": PaperEntry({"experts": 64, "top_k": 8, "total_B": 6.9, "active_B": 1.3}, f"{_OL}, §2 and Table 1",
                               "'we use 1.3B active parameters out of a total of 6.9B, with 8 activated experts out "
                               "of 64 per layer. We use dropless token choice routing'"),
    "no_renormalisation": PaperEntry(
        "The top-k routing probabilities are used as they come out of the softmax over all experts, "
        "without renormalising them to sum to 1.",
        f"{_OL}, §2, Equation 1; transformers' OlmoeConfig(norm_topk_prob=False)",
        "paraphrase of §2: 'A softmax is applied to the router outputs to compute routing probabilities for all "
        "N_E experts. Each selected expert E_i processes the input x, the output of which is then multiplied "
        "with its respective routing probability.' The released implementation agrees (norm_topk_prob=False)."),
    "aux_losses": PaperEntry(
        {"load_balancing": 0.01, "router_z_loss": 0.001}, f"{_OL}, §2 and Table 1 (§4.1.6, §4.1.7)",
        "'We train OLMoE-1B-7B from scratch with two auxiliary losses: load balancing loss and router z-loss'; "
        "Table 1: load balancing loss 'Used with weight 0.01', router z-loss 'Used with weight 0.001'"),
    "router_saturation": PaperEntry(
        "'In Figure 20 we find that after 1% of pretraining (5000 steps or 20B tokens), up to ∼60% of routing "
        "to the top-8 activated experts has already saturated (right). [...] At 40% of pretraining, "
        "saturation reaches up to ∼80%. However, which top-1 expert has the highest routing probability "
        "saturates slower (left). We find that routing in later layers saturates earlier during pretraining. "
        "Layer 0 is an outlier saturating significantly more slowly than other layers.'",
        f"{_OL}, §5.1, Figure 20",
        "quoted. Saturation is Equation 5 (mean |E_t ∩ E_T| / k over tokens; moelab.metrics.router_saturation), "
        "measured on 'a random 0.5% of the C4 validation data' at 1, 10, 20 and 40 % of pretraining. The "
        "numbers are 'up to', i.e. the best layer, for k = 8 of 64 experts; no top-1 number is stated in the "
        "text. `olmoe_saturation_reference()` gives them as plot markers."),
    "saturation_random": PaperEntry(
        {"top1": 1.6, "top8": 12.5}, f"{_OL}, §5.1",
        "'For OLMoE-1B-7B with its 64 experts, random routing equals a saturation of 1/64 = 1.6% for k = 1 and "
        "8/64 = 12.5% for k = 8.' (uniform loads; moelab.metrics.baselines.saturation_chance keeps the loads)"),
    "coactivation": PaperEntry(
        "'In Figure 21, we find that there is no strong co-activation among experts in one layer, with only few "
        "exceptions. This may indicate that there is little redundancy across different experts.'",
        f"{_OL}, §5.2, Figure 21",
        "quoted; co-activation is Equation 6, N(E_i, E_j) / N(E_i) = P(j | i) among tokens routed to i"),
    "coactivation_merge": PaperEntry(
        "'If multiple expert pairs have high co-activation, it may suggest that these experts could be merged, "
        "benefiting less from keeping them separate.'",
        f"{_OL}, §5.2, after Equation 6",
        "quoted; how the paper proposes to read strong pairs. It then finds few of them (Figure 21, the "
        "'coactivation' entry). P(j | i) is high for every i when j is a busy expert: read the lift "
        "(moelab.metrics.baselines.coactivation_lift)"),
    "domain_specialization": PaperEntry(
        "'In Figure 22 (top) we find many examples of experts that are activated significantly above or below "
        "random chance for specific domains. E.g., for arXiv, which has a very specific distribution with lots "
        "of scientific text, the first expert in layer 0 is nearly 100% specialized. [...] For generic "
        "domains, such as C4 [...] expert activations in OLMoE-1B-7B are much more balanced. [...] "
        "Mixtral-8x7B [...] exhibits little domain specialization across both unique and generic domains.'",
        f"{_OL}, §5.3, Figure 22",
        "quoted; Equation 7 with k = 8 (OLMoE) and k = 2 (Mixtral); the figure's chance lines are 8/64 = 12.5 % "
        "and 2/8 = 25 % per expert. The paper hypothesises the difference comes from Mixtral being upcycled."),
    "mixtral_near_uniform": PaperEntry(
        "'Mixtral-8x7B [...] exhibits little domain specialization across both unique and generic domains. "
        "Experts are activated close to the uniform routing baseline for all layers and domains.'",
        f"{_OL}, §5.3, Figure 22 (bottom)",
        "quoted: OLMoE's measurement of Mixtral-8x7B (k = 2, uniform baseline 2/8 = 25 % per expert). This, not "
        "the Mixtral paper's text, is the published statement that Mixtral's routing is near-uniform; Mixtral's "
        "own Figure 7 draws the shares beside 1/8 and its §5 comments only on their similarity across domains."),
    "vocabulary_specialization": PaperEntry(
        "'In Figure 23 we find that vocabulary specialization is higher in later layers, similar to how later "
        "layers saturate earlier (§5.1). Later layers also specialize more on predicted output token IDs "
        "rather than input token IDs'",
        f"{_OL}, §5.4, Figure 23",
        "quoted; Equation 8, k = 1 in Figure 23. The chance level of a max share over n occurrences is not 1/E "
        "(moelab.metrics.baselines.max_share_chance)"),
}


def olmoe_saturation_reference() -> pd.DataFrame:
    """OLMoE's stated router saturation (§5.1): columns share, value (%), metric, for plot markers.

        >>> olmoe_saturation_reference()[["share", "value", "metric"]].values.tolist()
        [[0.01, 60.0, 'topk'], [0.4, 80.0, 'topk']]

    Only the two numbers the text states ('up to ∼60%' after 1 % and 'up to ∼80%' at 40 % of
    pretraining, top-8 of 64 experts, the best layer), not values read off Figure 20.
    """
    src = OLMOE["router_saturation"].source
    return pd.DataFrame({"share": [0.01, 0.40], "value": [60.0, 80.0], "metric": "topk",
                         "note": "'up to ∼' (best layer), k = 8 of 64", "source": src})


def mixtral_table5() -> pd.DataFrame:
    """Table 5 as a DataFrame: rows domains, columns (first | any, layer) in %.

        >>> mixtral_table5().columns.tolist()[:3]
        [('first', 0), ('first', 15), ('first', 31)]
    """
    t = MIXTRAL["table5"].value
    cols = pd.MultiIndex.from_product([["first", "any"], [0, 15, 31]], names=["choice", "layer"])
    return pd.DataFrame([list(v) for v in t.values()], index=pd.Index(list(t), name="domain"), columns=cols)


def cite(entry: PaperEntry) -> str:
    """A caption line: the value (or statement) and its source.

        >>> cite(MIXTRAL["table5_layers"])
        '(0, 15, 31) (Mixtral paper (Jiang et al. 2024, arXiv:2401.04088v1), §5, Table 5 and Figure 7)'
    """
    return f"{entry.value} ({entry.source})"
