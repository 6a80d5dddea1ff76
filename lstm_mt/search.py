"""Search: turn a trained model and a source batch into target token sequences.

`greedy_search` picks the most probable token at every step. `beam_search` keeps the
``beam_size`` best prefixes of every sentence, all sentences and beams as rows of one
``[B*K]`` batch, and returns an n-best list per sentence ranked by the GNMT length-normalized
score ``score / lp``, ``lp = ((5 + length) / 6) ** alpha`` (Wu et al., 2016). `search` runs
the one a `SearchConfig` asks for.

Output length is capped at ``max_len_a * source_length + max_len_b`` tokens per sentence
(EOS included); a hypothesis that reaches the cap ends there, without EOS. PAD and BOS are
never produced. Scores are total log-probabilities, EOS included.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lstm_mt.errors import LstmMtError
from lstm_mt.model import EncoderOutput, Seq2Seq
from lstm_mt.ranges import bounded, check_ranges
from lstm_mt.vocab import BOS_ID, EOS_ID, PAD_ID

__all__ = [
    "Hypothesis",
    "SearchConfig",
    "Translation",
    "beam_search",
    "greedy_search",
    "length_penalty",
    "max_output_lengths",
    "search",
]


@dataclass
class SearchConfig:
    """How to search. ``beam_size`` 1 is greedy search; ``alpha`` 0 ranks by the plain
    log-probability; ``nbest`` hypotheses per sentence, at most ``beam_size``."""

    beam_size: int = bounded(5, ge=1)
    alpha: float = bounded(0.6, ge=0)
    max_len_a: float = bounded(1.5, ge=0)
    max_len_b: int = bounded(10, ge=0)
    nbest: int = bounded(1, ge=1)

    def check(self) -> None:
        """Raise `LstmMtError` naming the option that is out of range."""
        check_ranges(self)
        if self.nbest > self.beam_size:
            raise LstmMtError(f"nbest={self.nbest}: must be between 1 and beam_size ({self.beam_size})")


@dataclass
class Hypothesis:
    """One output sentence: token ids (no BOS/EOS), its total log-probability, attention ``[T, S]``.

    ``attention`` has one row per decoding step (the EOS step included), so its row count
    is the length the length penalty counts.
    """

    tokens: list[int]
    score: float
    attention: Tensor

    @property
    def length(self) -> int:
        """Decoding steps taken: the tokens, plus EOS when the hypothesis ended with one."""
        return int(self.attention.shape[0])

    def normalized_score(self, alpha: float) -> float:
        """``score / lp(length)``: the key beam search ranks finished hypotheses by."""
        return self.score / float(length_penalty(self.length, alpha))


@dataclass
class Translation:
    """One translation of one input: detokenized ``text`` and the normalized score that ranked it.

    What `lstm_mt.translate.Translator` makes of a `Hypothesis` (its tokenizer detokenizes).

    ``target_ids``: the output subword ids (no EOS); ``source_ids``: the ids the model read;
    ``attention`` ``[T, S]``, one row per decoding step (EOS included), when asked for.
    An empty input gets text "", score 0 and no ids.
    """

    text: str
    score: float
    target_ids: list[int]
    source_ids: list[int]
    attention: Tensor | None = None


def length_penalty(length: int | Tensor, alpha: float) -> float | Tensor:
    """GNMT's ``((5 + length) / 6) ** alpha``; 1 for alpha 0."""
    return ((5.0 + length) / 6.0) ** alpha


def max_output_lengths(src_lengths: Tensor, max_len_a: float, max_len_b: int) -> Tensor:
    """Per-sentence cap on output tokens (EOS included): ``a * source_length + b``, at least 1."""
    return (src_lengths.float() * max_len_a + max_len_b).floor().long().clamp(min=1)


def search(model: Seq2Seq, src: Tensor, src_lengths: Tensor, cfg: SearchConfig) -> list[list[Hypothesis]]:
    """An n-best list per row of ``src`` ``[B, S]``: greedy for beam_size 1, beam search otherwise."""
    cfg.check()
    if cfg.beam_size == 1:
        return [[best] for best in greedy_search(model, src, src_lengths, cfg)]
    return beam_search(model, src, src_lengths, cfg)


@torch.no_grad()
def greedy_search(
    model: Seq2Seq,
    src: Tensor,
    src_lengths: Tensor,
    cfg: SearchConfig | None = None,
    encoder_out: EncoderOutput | None = None,
) -> list[Hypothesis]:
    """The argmax token at every step, for a padded batch ``src`` ``[B, S]``; one `Hypothesis` per row.

    Only ``cfg``'s length cap applies (default: `SearchConfig`'s). ``encoder_out``:
    ``model.encode(src, src_lengths)`` where the caller already has it.
    """
    cfg = cfg or SearchConfig()
    if encoder_out is None:
        encoder_out = model.encode(src, src_lengths)
    state = model.init_decoder_state(encoder_out)
    batch = src.shape[0]
    limits = max_output_lengths(src_lengths.to(src.device), cfg.max_len_a, cfg.max_len_b)
    prev = torch.full((batch,), BOS_ID, dtype=torch.long, device=src.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=src.device)
    scores = torch.zeros(batch, dtype=_score_dtype(encoder_out.memory.dtype), device=src.device)
    tokens, attentions = [], []
    for step in range(int(limits.max())):
        log_probs, state, attention = model.decode_step(prev, state, encoder_out)
        best_score, best = _forbid_specials(log_probs).max(dim=-1)
        best = best.masked_fill(finished, PAD_ID)
        scores += best_score.masked_fill(finished, 0.0)
        tokens.append(best)
        attentions.append(attention)
        finished |= (best == EOS_ID) | (step + 1 >= limits)
        if bool(finished.all()):
            break
        prev = best
    return _to_hypotheses(torch.stack(tokens, dim=1), scores, torch.stack(attentions, dim=1), src_lengths)


@torch.no_grad()
def beam_search(
    model: Seq2Seq,
    src: Tensor,
    src_lengths: Tensor,
    cfg: SearchConfig | None = None,
    keep_greedy: bool = True,
) -> list[list[Hypothesis]]:
    """``cfg.nbest`` best hypotheses of each row of ``src`` ``[B, S]``, best first by ``score / lp``.

    Every step extends each live prefix by every token and keeps, per sentence, the best
    ``beam_size`` of the ``2 * beam_size`` best extensions that do not end; an extension
    by EOS among the best ``beam_size`` is finished with its score and is not extended
    again. A sentence stops when it has ``beam_size`` finished hypotheses and no live
    prefix could still beat the worst of them, or at its length cap, where the best
    ``beam_size`` extensions finish as they are. Stopped sentences leave the batch.

    Plain beam search can prune the greedy prefix (when ``beam_size`` others outrank it)
    and then end below greedy search. With ``keep_greedy`` the greedy hypothesis joins
    the candidates, so the result never ranks below it, for about a fifth more time.
    """
    cfg = cfg or SearchConfig()
    cfg.check()
    beam_size = cfg.beam_size
    src_lengths = src_lengths.to(src.device)
    encoded = model.encode(src, src_lengths)
    state = model.init_decoder_state(encoded)
    rows = torch.arange(src.shape[0], device=src.device).repeat_interleave(beam_size)
    encoder_out, state = encoded.index_select(rows), state.index_select(rows)
    limits = max_output_lengths(src_lengths, cfg.max_len_a, cfg.max_len_b)
    beams = _Beams.start(limits, beam_size, src.shape[1], encoder_out.memory.dtype)
    finished = _FinishedHypotheses(src_lengths.tolist(), beam_size, cfg.alpha)
    for step in range(int(limits.max())):
        log_probs, state, attention = model.decode_step(beams.last_tokens(), state, encoder_out)
        parents = beams.advance(_forbid_specials(log_probs), attention, step, finished)
        state = state.index_select(parents)
        done = beams.stopped(step, finished)
        if bool(done.any()):
            kept_rows = beams.drop(done)
            if not beams.sentence_ids:
                break
            state, encoder_out = state.index_select(kept_rows), encoder_out.index_select(kept_rows)
    if keep_greedy and beam_size > 1:
        for sentence, greedy in enumerate(greedy_search(model, src, src_lengths, cfg, encoded)):
            finished.add_if_new(sentence, greedy)
    return finished.best(cfg.nbest)


@dataclass
class _Beams:
    """The live prefixes of the sentences still searching, ``width`` per sentence.

    Row ``i * width + k`` of ``tokens`` ``[n*K, t]`` and ``attention`` ``[n*K, t, S]`` is
    beam k of the i-th live sentence, whose position in the input batch is ``sentence_ids[i]``.
    """

    sentence_ids: list[int]
    scores: Tensor  # [n, K] total log-probabilities, best first
    tokens: Tensor
    attention: Tensor
    limits: Tensor  # [n] steps allowed
    width: int

    @classmethod
    def start(cls, limits: Tensor, width: int, src_width: int, dtype: torch.dtype) -> _Beams:
        """One live prefix (empty, score 0) per sentence; the other beams start at -inf."""
        n, device = limits.shape[0], limits.device
        scores = torch.full((n, width), float("-inf"), dtype=_score_dtype(dtype), device=device)
        scores[:, 0] = 0.0
        return cls(
            sentence_ids=list(range(n)),
            scores=scores,
            tokens=torch.empty(n * width, 0, dtype=torch.long, device=device),
            attention=torch.empty(n * width, 0, src_width, dtype=dtype, device=device),
            limits=limits,
            width=width,
        )

    def last_tokens(self) -> Tensor:
        """The token each row feeds to the next step ``[n*K]``: BOS first, then its last token."""
        if self.tokens.shape[1] == 0:
            return torch.full((self.tokens.shape[0],), BOS_ID, dtype=torch.long, device=self.tokens.device)
        return self.tokens[:, -1]

    def advance(self, log_probs: Tensor, attention: Tensor, step: int, finished: _FinishedHypotheses) -> Tensor:
        """Extend every prefix by one token; hand the ending ones to ``finished``.

        Returns, for each new row, the row it extends ``[n*K]`` (to reorder the decoder state).
        """
        n, width = self.scores.shape
        vocab = log_probs.shape[-1]
        totals = (self.scores.unsqueeze(2) + log_probs.view(n, width, vocab)).view(n, width * vocab)
        candidate_scores, candidates = totals.topk(min(2 * width, width * vocab), dim=1)  # best first
        parents = candidates // vocab + torch.arange(n, device=totals.device).unsqueeze(1) * width
        tokens = candidates % vocab
        rank = torch.arange(candidates.shape[1], device=totals.device)
        ends = (tokens == EOS_ID) | (step + 1 >= self.limits).unsqueeze(1)
        finishing = ends & (rank < width) & candidate_scores.isfinite()
        if bool(finishing.any()):
            self._finish(finishing, parents, tokens, candidate_scores, attention, finished)
        # At most one EOS per beam among the 2K candidates, so at least K of them go on.
        going_on = (rank + ends.long() * candidates.shape[1]).argsort(dim=1)[:, :width]
        self.scores = candidate_scores.gather(1, going_on)
        chosen = parents.gather(1, going_on).view(-1)
        self.tokens = torch.cat([self.tokens[chosen], tokens.gather(1, going_on).view(-1, 1)], dim=1)
        self.attention = torch.cat([self.attention[chosen], attention[chosen].unsqueeze(1)], dim=1)
        return chosen

    def _finish(
        self,
        finishing: Tensor,
        parents: Tensor,
        tokens: Tensor,
        scores: Tensor,
        attention: Tensor,
        finished: _FinishedHypotheses,
    ) -> None:
        rows = parents[finishing]
        histories = torch.cat([self.tokens[rows], tokens[finishing].unsqueeze(1)], dim=1).tolist()
        attentions = torch.cat([self.attention[rows], attention[rows].unsqueeze(1)], dim=1).cpu()
        sentences = finishing.nonzero()[:, 0].tolist()
        for index, (sentence, history, score) in enumerate(zip(sentences, histories, scores[finishing].tolist())):
            if history[-1] == EOS_ID:
                history = history[:-1]
            finished.add(self.sentence_ids[sentence], history, score, attentions[index])

    def stopped(self, step: int, finished: _FinishedHypotheses) -> Tensor:
        """``[n]`` True for sentences at their cap or whose finished hypotheses can't be beaten.

        A live prefix only loses log-probability, and lp grows with length, so its best
        possible normalized score is its score now divided by lp at the cap.
        """
        at_limit = step + 1 >= self.limits
        best_possible = self.scores[:, 0] / length_penalty(self.limits.to(self.scores.dtype), finished.alpha)
        to_beat = self.scores.new_tensor([finished.worst_kept(s) for s in self.sentence_ids])
        return at_limit | (best_possible <= to_beat)

    def drop(self, done: Tensor) -> Tensor:
        """Remove the ``done`` sentences; returns the rows kept ``[n'*K]``."""
        kept = (~done).nonzero()[:, 0]
        rows = (kept.unsqueeze(1) * self.width + torch.arange(self.width, device=kept.device)).view(-1)
        self.sentence_ids = [self.sentence_ids[i] for i in kept.tolist()]
        self.scores, self.limits = self.scores[kept], self.limits[kept]
        self.tokens, self.attention = self.tokens[rows], self.attention[rows]
        return rows


class _FinishedHypotheses:
    """Finished hypotheses of every sentence in the batch, with their normalized scores."""

    def __init__(self, src_lengths: list[int], width: int, alpha: float) -> None:
        self.src_lengths = src_lengths
        self.width = width
        self.alpha = alpha
        self.by_sentence: list[list[tuple[float, Hypothesis]]] = [[] for _ in src_lengths]

    def add(self, sentence: int, tokens: list[int], score: float, attention: Tensor) -> None:
        """Keep a hypothesis of input row ``sentence``; ``attention`` ``[T, S]`` is cut to its source length."""
        hypothesis = Hypothesis(tokens, score, attention[:, : self.src_lengths[sentence]].clone())
        entries = self.by_sentence[sentence]
        entries.append((hypothesis.normalized_score(self.alpha), hypothesis))
        entries.sort(key=lambda entry: entry[0], reverse=True)  # stable: earlier ones win ties

    def add_if_new(self, sentence: int, hypothesis: Hypothesis) -> None:
        """`add` a complete hypothesis unless one with the same tokens is there already."""
        if all(kept.tokens != hypothesis.tokens for _, kept in self.by_sentence[sentence]):
            self.add(sentence, hypothesis.tokens, hypothesis.score, hypothesis.attention)

    def worst_kept(self, sentence: int) -> float:
        """The normalized score a live prefix must beat: the beam_size-th best, -inf until there are that many."""
        entries = self.by_sentence[sentence]
        return entries[self.width - 1][0] if len(entries) >= self.width else float("-inf")

    def best(self, nbest: int) -> list[list[Hypothesis]]:
        """The ``nbest`` best hypotheses of each sentence, best first."""
        return [[hypothesis for _, hypothesis in entries[:nbest]] for entries in self.by_sentence]


def _score_dtype(model_dtype: torch.dtype) -> torch.dtype:
    """Sum log-probabilities in float32 at least, even for a half-precision model."""
    return torch.promote_types(model_dtype, torch.float32)


def _forbid_specials(log_probs: Tensor) -> Tensor:
    """``log_probs`` with PAD and BOS made impossible (in place: it is a fresh tensor)."""
    log_probs[:, PAD_ID] = float("-inf")
    log_probs[:, BOS_ID] = float("-inf")
    return log_probs


def _to_hypotheses(tokens: Tensor, scores: Tensor, attention: Tensor, src_lengths: Tensor) -> list[Hypothesis]:
    """Cut each row at its EOS (or the padding after its length cap) and wrap it as a `Hypothesis`."""
    hypotheses = []
    for row, score, weights, src_length in zip(tokens.tolist(), scores.tolist(), attention, src_lengths.tolist()):
        length = next((k for k, token in enumerate(row) if token in (EOS_ID, PAD_ID)), len(row))
        steps = length + (length < len(row) and row[length] == EOS_ID)
        hypotheses.append(Hypothesis(row[:length], score, weights[:steps, :src_length].cpu()))
    return hypotheses
