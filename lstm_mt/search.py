"""Search: turn a trained model and a source batch into target token sequences.

`greedy_search` picks the most probable token at every step. `beam_search` keeps the
``beam_size`` best prefixes of every sentence, all sentences and beams as rows of one
``[B*K]`` batch, and returns an n-best list per sentence ranked by the GNMT length-normalized
score ``score / lp``, ``lp = ((5 + length) / 6) ** alpha`` (Wu et al., 2016). `search` runs
the one a `SearchConfig` asks for.

Both take any model with ``encode``, ``init_decoder_state`` and ``decode_step`` like
`Seq2Seq`'s, whose states and encoder outputs are `BatchRows` (an ensemble is one).

Output length is capped at ``max_len_a * source_length + max_len_b`` tokens per sentence
(EOS included); a hypothesis that reaches the cap ends there, without EOS. PAD and BOS are
never produced. Scores are total log-probabilities, EOS included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.nn.functional import pad

from lstm_mt.encoder import BatchRows
from lstm_mt.errors import LstmMtError
from lstm_mt.ranges import bounded, check_ranges
from lstm_mt.topk import VocabularyBlocks, row_argmax
from lstm_mt.vocab import BOS_ID, EOS_ID, PAD_ID

__all__ = [
    "Hypothesis",
    "SearchConfig",
    "Translation",
    "SearchModel",
    "beam_search",
    "greedy_search",
    "length_penalty",
    "max_output_lengths",
    "search",
]


class SearchModel(Protocol):
    """What search needs of a model (`Seq2Seq`, an ensemble): encode once, then step the decoder.

    The encoder output and the decoder state are `BatchRows`: search selects, reorders and joins their rows.
    """

    def encode(self, src: Tensor, src_lengths: Tensor) -> Any: ...

    def init_decoder_state(self, encoder_out: Any) -> Any: ...

    def decode_step(self, prev_tokens: Tensor, state: Any, encoder_out: Any) -> tuple[Tensor, Any, Tensor]:
        """Log-probabilities ``[B, V]``, the new state and attention weights ``[B, S]``."""
        ...


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


def search(model: SearchModel, src: Tensor, src_lengths: Tensor, cfg: SearchConfig) -> list[list[Hypothesis]]:
    """An n-best list per row of ``src`` ``[B, S]``: greedy for beam_size 1, beam search otherwise."""
    cfg.check()
    if cfg.beam_size == 1:
        return [[best] for best in greedy_search(model, src, src_lengths, cfg)]
    return beam_search(model, src, src_lengths, cfg)


@torch.no_grad()
def greedy_search(
    model: SearchModel,
    src: Tensor,
    src_lengths: Tensor,
    cfg: SearchConfig | None = None,
    encoder_out: BatchRows | None = None,
) -> list[Hypothesis]:
    """The argmax token at every step, for a padded batch ``src`` ``[B, S]``; one `Hypothesis` per row.

    Only ``cfg``'s length cap applies (default: `SearchConfig`'s). ``encoder_out``:
    ``model.encode(src, src_lengths)`` where the caller already has it.
    """
    cfg = cfg or SearchConfig()
    src_lengths = src_lengths.to(src.device)
    if encoder_out is None:
        encoder_out = model.encode(src, src_lengths)
    limits = max_output_lengths(src_lengths, cfg.max_len_a, cfg.max_len_b)
    bos = torch.full((src.shape[0],), BOS_ID, dtype=torch.long, device=src.device)
    start = torch.zeros(src.shape[0], dtype=torch.float32, device=src.device)
    state = model.init_decoder_state(encoder_out)
    return _to_hypotheses(*_greedy_steps(model, encoder_out, state, bos, start, limits), src_lengths)


def _greedy_steps(
    model: SearchModel, encoder_out: BatchRows, state: BatchRows, prev: Tensor, scores: Tensor, limits: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Greedy steps from ``state``, which last read ``prev`` ``[B]``, until each row has ended
    with EOS or taken its ``limits`` steps.

    Returns the tokens ``[B, T]`` (PAD after a row's end), ``scores`` plus each row's new
    log-probabilities, and the attention ``[B, T, S]``. Ended rows leave the batch once they
    are a quarter of it (each leaving copies the state, so not at every step).
    """
    batch, longest = prev.shape[0], int(limits.max())
    rows = torch.arange(batch, device=prev.device)  # the output row of each row decoded
    tokens = torch.full((batch, longest), PAD_ID, dtype=torch.long, device=prev.device)
    attention: Tensor | None = None
    ended = torch.zeros_like(prev, dtype=torch.bool)
    for step in range(longest):
        log_probs, state, weights = model.decode_step(prev, state, encoder_out)
        best_score, best = row_argmax(_forbid_specials(log_probs))
        del log_probs  # [B, V]: freed before the next step allocates its own
        if attention is None:
            attention = weights.new_zeros(batch, longest, weights.shape[1])
            scores = scores.to(torch.promote_types(scores.dtype, best_score.dtype), copy=True)  # float64 models
        best = best.masked_fill(ended, PAD_ID)
        tokens[rows, step] = best
        attention[rows, step] = weights
        scores.index_add_(0, rows, best_score.masked_fill(ended, 0.0).to(scores.dtype))  # bf16 under autocast
        ended |= (best == EOS_ID) | (step + 1 >= limits)
        finished = int(ended.sum())
        if finished == rows.shape[0]:
            return tokens[:, : step + 1], scores, attention[:, : step + 1]
        prev = best
        if 4 * finished >= rows.shape[0]:
            going_on = (~ended).nonzero()[:, 0]
            rows, prev, limits, ended = rows[going_on], prev[going_on], limits[going_on], ended[going_on]
            state, encoder_out = state.index_select(going_on), encoder_out.index_select(going_on)
    raise AssertionError("unreachable: every row ends at its limit")


@torch.no_grad()
def beam_search(
    model: SearchModel,
    src: Tensor,
    src_lengths: Tensor,
    cfg: SearchConfig | None = None,
    keep_greedy: bool = True,
) -> list[list[Hypothesis]]:
    """``cfg.nbest`` best hypotheses of each row of ``src`` ``[B, S]``, best first by ``score / lp``.

    Every step extends each live prefix by every token and keeps, per sentence, the best
    ``beam_size`` of the ``2 * beam_size`` best extensions that do not end; an extension
    by EOS among the best ``beam_size`` is finished with its score and is not extended
    again. A sentence stops at its length cap, where the best ``beam_size`` extensions
    finish as they are, or as soon as it has ``nbest`` finished hypotheses and no live
    prefix could still beat the ``nbest``-th: a prefix only loses log-probability and lp
    grows with length, so the best a prefix can reach is its score now over lp at the cap.
    Stopped sentences leave the batch, so the rows decoded shrink as sentences finish.

    Plain beam search can prune the greedy prefix (when ``beam_size`` others outrank it)
    and then end below greedy search. With ``keep_greedy`` the greedy hypothesis joins
    the candidates, so the result never ranks below it. Beam search follows the greedy
    prefix among its beams; only where it prunes it, that prefix is continued greedily, as
    long as it could still make the n-best list, in the same batch as the beams (rows after
    theirs, from the next time the batch is compacted).
    """
    cfg = cfg or SearchConfig()
    cfg.check()
    src_lengths = src_lengths.to(src.device)
    encoded = model.encode(src, src_lengths)
    encoder_out, state = encoded, model.init_decoder_state(encoded)
    limits = max_output_lengths(src_lengths, cfg.max_len_a, cfg.max_len_b)
    penalties = _LengthPenalties(cfg.alpha, int(limits.max()), src.device)
    finished = _FinishedHypotheses(src_lengths.tolist(), cfg.nbest, penalties)
    beams = _Beams.start(limits, cfg.beam_size, cfg.nbest, follow_greedy=keep_greedy and cfg.beam_size > 1)
    greedy = _GreedyRows.none(int(limits.max()), limits)
    step = 0
    while beams.sentence_ids or greedy.count:
        beam_rows = beams.tokens.shape[0]
        prev = beams.last_tokens() if not greedy.count else torch.cat([beams.last_tokens(), greedy.last_tokens()])
        log_probs, state, attention = model.decode_step(prev, state, encoder_out)
        _forbid_specials(log_probs)
        if greedy.count:
            greedy.advance(log_probs[beam_rows:], attention[beam_rows:], finished)
        kept_rows = None
        if beams.sentence_ids:
            decided = beams.advance(log_probs[:beam_rows], attention[:beam_rows], step, penalties)
            any_handed, any_greedy_pruned, any_done = decided.flags()
            if any_handed:
                beams.hand_over_finished(finished)
            if any_greedy_pruned:
                greedy.pending.append(beams.greedy_tails(state, step))
            beams.move_on()
            if step == 0:  # from one row per sentence to beam_size: per-sentence fields are repeated too
                state, encoder_out = state.index_select(decided.chosen), encoder_out.index_select(decided.chosen)
            else:
                state = state.reorder_beams(greedy.after(decided.chosen, beam_rows))
            beam_rows = beams.tokens.shape[0]
            kept_rows = beams.drop_done() if any_done else None
        del log_probs  # [rows, V]: freed before the next step allocates its own
        if kept_rows is not None or greedy.worth_compacting(bool(beams.sentence_ids)):
            if kept_rows is None:
                kept_rows = torch.arange(beam_rows, device=src.device)
            state, encoder_out = greedy.compact(state, encoder_out, encoded, kept_rows, beam_rows, finished)
        step += 1
    return finished.best()


class _LengthPenalties:
    """``lp(length)`` for every length up to the longest cap, computed once in Python floats, so that
    the device's stopping test and the host's ranking divide by the very same numbers."""

    def __init__(self, alpha: float, longest: int, device: torch.device) -> None:
        self.alpha = alpha
        self.values = [float(length_penalty(length, alpha)) for length in range(longest + 1)]
        self.table = torch.tensor(self.values, dtype=torch.float64, device=device)

    def normalize(self, scores: Tensor, lengths: Tensor | int) -> Tensor:
        """``scores / lp(lengths)`` in float64."""
        penalty = self.table[lengths] if isinstance(lengths, Tensor) else self.values[lengths]
        return scores.double() / penalty


@dataclass
class _Beams:
    """The live prefixes of the sentences still searching: one per sentence before the first step, then ``size``.

    Row ``i * r + k`` of ``tokens`` ``[n*r, t]`` and ``attention`` ``[n*r, t, S]`` is prefix k
    of the i-th live sentence (r prefixes each), whose position in the input batch is ``sentence_ids[i]``.
    ``kept`` ``[n, nbest]``: the normalized scores of each sentence's best finished hypotheses
    (-inf until there are that many), which decide when a sentence can stop. ``greedy`` ``[n]``:
    the beam that holds the greedy prefix, -1 once it has finished or been pruned (None: not followed).
    """

    sentence_ids: list[int]
    scores: Tensor  # [n, r] total log-probabilities, best first
    tokens: Tensor
    attention: Tensor | None  # made at the first step, in the dtype of the model's attention
    limits: Tensor  # [n] steps allowed
    kept: Tensor
    greedy: Tensor | None
    size: int  # K
    step: _Step | None = None

    @classmethod
    def start(cls, limits: Tensor, size: int, nbest: int, follow_greedy: bool) -> _Beams:
        """One live prefix per sentence, empty, with score 0: the first step decodes one row per
        sentence, and its ``size`` best extensions that go on become the beams."""
        n, device = limits.shape[0], limits.device
        return cls(
            sentence_ids=list(range(n)),
            scores=torch.zeros(n, 1, device=device),  # float32; a float64 model's log-probabilities promote it
            tokens=torch.empty(n, 0, dtype=torch.long, device=device),
            attention=None,
            limits=limits,
            kept=torch.full((n, nbest), float("-inf"), dtype=torch.float64, device=device),
            greedy=torch.zeros(n, dtype=torch.long, device=device) if follow_greedy else None,
            size=size,
        )

    def last_tokens(self) -> Tensor:
        """The token each row feeds to the next step ``[n*K]``: BOS first, then its last token."""
        if self.tokens.shape[1] == 0:
            return torch.full((self.tokens.shape[0],), BOS_ID, dtype=torch.long, device=self.tokens.device)
        return self.tokens[:, -1]

    def advance(self, log_probs: Tensor, attention: Tensor, step: int, penalties: _LengthPenalties) -> _Step:
        """Score every extension of every prefix and decide the step, on the device, without
        changing the beams yet (`move_on` does); ``kept`` takes in the finishing candidates."""
        n, rows = self.scores.shape
        blocks = VocabularyBlocks(log_probs)
        scores, beams, tokens = _candidates(blocks, self.scores, 2 * self.size)  # best first
        offsets = torch.arange(n, device=log_probs.device) * rows
        parents = beams + offsets.unsqueeze(1)
        rank = torch.arange(tokens.shape[1], device=log_probs.device)
        at_limit = step + 1 >= self.limits
        ends = (tokens == EOS_ID) | at_limit.unsqueeze(1)
        finishing = ends & (rank < self.size) & scores.isfinite()
        # At most one EOS per prefix among the 2K candidates, so at least K of them go on.
        going_on = (rank + ends.long() * tokens.shape[1]).argsort(dim=1)[:, : self.size]
        finished_now = penalties.normalize(scores, step + 1).masked_fill(~finishing, float("-inf"))
        # Not above the nbest-th best finished so far: can never make the n-best list (ties go to the earlier).
        handed = finishing & (finished_now > self.kept[:, -1:])
        self.kept = torch.cat([self.kept, finished_now], dim=1).topk(self.kept.shape[1], dim=1).values
        next_scores = scores.gather(1, going_on)
        best_possible = penalties.normalize(next_scores[:, 0], self.limits)
        self.step = _Step(
            attention=attention,
            parents=parents,
            tokens=tokens,
            scores=scores,
            finishing=finishing,
            handed=handed,
            chosen=parents.gather(1, going_on).view(-1),
            next_tokens=tokens.gather(1, going_on).view(-1, 1),
            next_scores=next_scores,
            done=at_limit | (best_possible <= self.kept[:, -1]),
        )
        if self.greedy is not None:
            self._follow_greedy(self.step, blocks, beams, going_on, offsets)
        return self.step

    def _follow_greedy(
        self, step: _Step, blocks: VocabularyBlocks, beams: Tensor, going_on: Tensor, offsets: Tensor
    ) -> None:
        """Find the greedy prefix's extension among the candidates: going on, finished or pruned."""
        assert self.greedy is not None
        alive = self.greedy >= 0
        beam = self.greedy.clamp(min=0)
        step.greedy_row = beam + offsets
        step.greedy_score, step.greedy_token = blocks.argmax(step.greedy_row)
        match = (beams == beam.unsqueeze(1)) & (step.tokens == step.greedy_token.unsqueeze(1)) & alive.unsqueeze(1)
        goes_on = (match & ~step.finishing).gather(1, going_on)
        follows = goes_on.any(dim=1)
        step.greedy_pruned = alive & ~follows & ~(match & step.finishing).any(dim=1)
        self.greedy = torch.where(follows, goes_on.long().argmax(dim=1), -1)

    def hand_over_finished(self, finished: _FinishedHypotheses) -> None:
        """Give the step's finishing candidates that could make the n-best list, with their histories,
        to ``finished``."""
        step = self.step
        assert step is not None
        rows = step.parents[step.handed]
        histories = torch.cat([self.tokens[rows], step.tokens[step.handed].unsqueeze(1)], dim=1).tolist()
        attentions = self._attention_with(rows, step.attention).cpu()
        sentences = step.handed.nonzero()[:, 0].tolist()
        scores = step.scores[step.handed].tolist()
        for index, (sentence, history, score) in enumerate(zip(sentences, histories, scores)):
            if history[-1] == EOS_ID:
                history = history[:-1]
            finished.add(self.sentence_ids[sentence], Hypothesis(history, score, attentions[index]))

    def greedy_tails(self, state: BatchRows, step_index: int) -> _GreedyTails:
        """The greedy prefixes the step prunes, extended by their greedy token, to be continued later.

        ``state``: the decoder state after the step, before the beams are reordered.
        """
        step = self.step
        assert step is not None and step.greedy_pruned is not None and step.greedy_row is not None
        assert step.greedy_token is not None and step.greedy_score is not None
        pruned = step.greedy_pruned.nonzero()[:, 0]
        rows = step.greedy_row[pruned]
        return _GreedyTails(
            sentence_ids=[self.sentence_ids[i] for i in pruned.tolist()],
            tokens=torch.cat([self.tokens[rows], step.greedy_token[pruned].unsqueeze(1)], dim=1),
            scores=self.scores.view(-1)[rows] + step.greedy_score[pruned],
            attention=self._attention_with(rows, step.attention),
            state=state.index_select(rows),
            steps=step_index + 1,
        )

    def move_on(self) -> None:
        """The kept extensions become the beams: scores, tokens and attention histories."""
        step = self.step
        assert step is not None
        self.scores = step.next_scores
        self.tokens = torch.cat([self.tokens[step.chosen], step.next_tokens], dim=1)
        self.attention = self._attention_with(step.chosen, step.attention)

    def drop_done(self) -> Tensor:
        """Remove the sentences the step found done; returns the rows kept ``[n'*K]``."""
        assert self.step is not None
        kept = (~self.step.done).nonzero()[:, 0]
        width = self.scores.shape[1]
        rows = (kept.unsqueeze(1) * width + torch.arange(width, device=kept.device)).view(-1)
        self.sentence_ids = [self.sentence_ids[i] for i in kept.tolist()]
        self.scores, self.limits, self.kept = self.scores[kept], self.limits[kept], self.kept[kept]
        self.tokens = self.tokens[rows]
        self.attention = None if self.attention is None else self.attention[rows]
        self.greedy = None if self.greedy is None else self.greedy[kept]
        return rows

    def _attention_with(self, rows: Tensor, attention: Tensor) -> Tensor:
        """The attention histories of ``rows`` with this step's row appended ``[r, t+1, S]``."""
        now = attention[rows].unsqueeze(1)
        return now if self.attention is None else torch.cat([self.attention[rows], now], dim=1)


@dataclass
class _Step:
    """One step's decisions: per candidate ``[n, 2K]`` its row, token, score, whether it
    finishes and whether it is handed over (it finishes above the sentence's n-best so far);
    the rows the beams go on from ``[n*K]`` with their new tokens and scores; per sentence
    ``[n]`` whether it is done, and the greedy prefix's extension and fate."""

    attention: Tensor
    parents: Tensor
    tokens: Tensor
    scores: Tensor
    finishing: Tensor
    handed: Tensor
    chosen: Tensor
    next_tokens: Tensor
    next_scores: Tensor
    done: Tensor
    greedy_pruned: Tensor | None = None
    greedy_row: Tensor | None = None
    greedy_token: Tensor | None = None
    greedy_score: Tensor | None = None

    def flags(self) -> tuple[bool, bool, bool]:
        """Whether anything is handed over, any greedy prefix is pruned, any sentence is done: one host sync."""
        pruned = self.greedy_pruned if self.greedy_pruned is not None else self.done.new_zeros(())
        handed, any_pruned, done = torch.stack([self.handed.any(), pruned.any(), self.done.any()]).tolist()
        return handed, any_pruned, done


@dataclass
class _GreedyTails:
    """Greedy prefixes that beam search pruned at step ``steps``: their sentences, tokens
    ``[m, steps]``, scores ``[m]``, attention ``[m, steps, S]`` and decoder state after the last token."""

    sentence_ids: list[int]
    tokens: Tensor
    scores: Tensor
    attention: Tensor
    state: BatchRows
    steps: int


@dataclass
class _GreedyRows:
    """Pruned greedy prefixes continued greedily in beam search's own batch, as the rows after the beams'.

    Row j belongs to input sentence ``sentence_ids[j]``; ``tokens`` ``[m, T]`` and ``attention``
    ``[m, T, S]`` hold its first ``lengths[j]`` steps (T: the longest length cap), ``scores`` ``[m]``
    its total log-probability, ``caps`` ``[m]`` its length cap. A row that has ended (EOS or its cap;
    its hypothesis is then handed over) or can no longer make its sentence's n-best list is no longer
    ``alive``; it stays in the batch until the batch is next compacted. Newly pruned prefixes wait in
    ``pending`` until then too: joining copies the batch's rows, which compacting does anyway.
    """

    sentence_ids: list[int]
    tokens: Tensor
    attention: Tensor | None  # made at the first join, like the beams' attention
    lengths: Tensor
    scores: Tensor
    caps: Tensor
    alive: Tensor
    limits: Tensor  # [B] every input sentence's length cap
    pending: list[_GreedyTails]
    alive_count: int = 0

    @classmethod
    def none(cls, longest: int, limits: Tensor) -> _GreedyRows:
        """No rows yet, for steps of at most ``longest`` tokens and the sentences' length caps ``limits``."""
        empty = limits.new_empty(0)
        return cls([], limits.new_empty(0, longest), None, empty, empty.float(), empty, empty.bool(), limits, [])

    @property
    def count(self) -> int:
        """Rows in the batch, alive or not."""
        return len(self.sentence_ids)

    def last_tokens(self) -> Tensor:
        """The token each row feeds to the next step ``[m]``."""
        return self.tokens.gather(1, (self.lengths - 1).unsqueeze(1)).squeeze(1)

    def after(self, beam_rows: Tensor, beam_count: int) -> Tensor:
        """``beam_rows`` followed by these rows, which follow ``beam_count`` rows of beams in the batch."""
        if not self.count:
            return beam_rows
        return torch.cat([beam_rows, beam_count + torch.arange(self.count, device=beam_rows.device)])

    def advance(self, log_probs: Tensor, attention: Tensor, finished: _FinishedHypotheses) -> None:
        """Extend every row by its most probable token (``log_probs`` ``[m, V]``, ``attention`` ``[m, S]``);
        hand over the rows that end and stop those that can no longer make their n-best list."""
        assert self.attention is not None
        best_score, best = row_argmax(log_probs)
        rows = torch.arange(self.count, device=best.device)
        position = self.lengths.clamp(max=self.tokens.shape[1] - 1)  # a row no longer alive may be full
        self.tokens[rows, position] = best
        self.attention[rows, position] = attention
        self.scores += best_score.masked_fill(~self.alive, 0.0).to(self.scores.dtype)
        self.lengths += self.alive.long()
        ended = self.alive & ((best == EOS_ID) | (self.lengths >= self.caps))
        thresholds = [finished.threshold(sentence) for sentence in self.sentence_ids]
        best_possible = finished.penalties.normalize(self.scores, self.caps)
        lost = best_possible <= torch.tensor(thresholds, dtype=torch.float64, device=best.device)
        self.alive &= ~ended & ~lost
        handed = ended & ~lost  # lost: not even its score now over lp at the cap beats the n-best
        any_handed, self.alive_count = torch.stack([handed.any(), self.alive.sum()]).tolist()
        if any_handed:
            self._hand_over(handed.nonzero()[:, 0], finished)

    def worth_compacting(self, beams_left: bool) -> bool:
        """Whether to compact when the beams do not: once they are all done, for pending prefixes or
        when a quarter of the rows are no longer alive (compacting copies the state)."""
        return not beams_left and (bool(self.pending) or 4 * (self.count - self.alive_count) >= max(self.count, 1))

    def compact(
        self,
        state: BatchRows,
        encoder_out: BatchRows,
        encoded: BatchRows,
        kept_beams: Tensor,
        beam_count: int,
        finished: _FinishedHypotheses,
    ) -> tuple[BatchRows, BatchRows]:
        """The batch's ``state`` and ``encoder_out`` with the beam rows ``kept_beams`` (of ``beam_count``),
        these rows that are still alive, and the pending prefixes that can still make their n-best list."""
        alive = self.alive.nonzero()[:, 0]
        self._keep(alive)
        rows = torch.cat([kept_beams, beam_count + alive])
        state, encoder_out = state.index_select(rows), encoder_out.index_select(rows)
        joining = [part for tails in self.pending for part in self._joining(tails, finished)]
        self.pending = []
        if joining:
            sentences = torch.tensor([sentence for _, _, sentence in joining], device=rows.device)
            state = BatchRows.cat([state, *(tails.state.index_select(picked) for tails, picked, _ in joining)])
            encoder_out = BatchRows.cat([encoder_out, encoded.index_select(sentences)])
            self._join(joining)
        return state, encoder_out

    def _joining(self, tails: _GreedyTails, finished: _FinishedHypotheses) -> list[tuple[_GreedyTails, Tensor, int]]:
        """The prefixes of ``tails`` to continue, as (tails, row, sentence); those that already ended
        are handed over, those that can no longer make their n-best list are dropped."""
        caps = self.limits[tails.sentence_ids]
        best_possible = finished.penalties.normalize(tails.scores, caps).tolist()
        ended = ((tails.tokens[:, -1] == EOS_ID) | (tails.steps >= caps)).tolist()
        joining = []
        for i, sentence in enumerate(tails.sentence_ids):
            if ended[i]:
                tokens = tails.tokens[i].tolist()
                score, attention = float(tails.scores[i]), tails.attention[i].cpu()
                finished.add_if_new(
                    sentence, Hypothesis(tokens[:-1] if tokens[-1] == EOS_ID else tokens, score, attention)
                )
            elif best_possible[i] > finished.threshold(sentence):
                joining.append((tails, caps.new_tensor([i]), sentence))
        return joining

    def _join(self, joining: list[tuple[_GreedyTails, Tensor, int]]) -> None:
        """Append the rows ``joining``, histories padded to the longest cap."""
        longest = self.tokens.shape[1]
        tokens = torch.cat([pad(tails.tokens[i], (0, longest - tails.steps), value=PAD_ID) for tails, i, _ in joining])
        attention = torch.cat([pad(tails.attention[i], (0, 0, 0, longest - tails.steps)) for tails, i, _ in joining])
        scores = torch.cat([tails.scores[i] for tails, i, _ in joining])
        sentences = [sentence for _, _, sentence in joining]
        if self.attention is None:
            self.attention, self.scores = attention[:0], scores[:0]
        self.sentence_ids += sentences
        self.tokens, self.attention = torch.cat([self.tokens, tokens]), torch.cat([self.attention, attention])
        self.scores = torch.cat([self.scores, scores])
        self.lengths = torch.cat([self.lengths, self.lengths.new_tensor([tails.steps for tails, _, _ in joining])])
        self.caps = torch.cat([self.caps, self.limits[self.limits.new_tensor(sentences)]])
        self.alive = torch.cat([self.alive, self.alive.new_ones(len(joining))])
        self.alive_count += len(joining)

    def _keep(self, rows: Tensor) -> None:
        """Keep only ``rows``."""
        self.sentence_ids = [self.sentence_ids[i] for i in rows.tolist()]
        self.tokens, self.lengths, self.scores = self.tokens[rows], self.lengths[rows], self.scores[rows]
        self.caps, self.alive = self.caps[rows], self.alive[rows]
        self.attention = None if self.attention is None else self.attention[rows]

    def _hand_over(self, rows: Tensor, finished: _FinishedHypotheses) -> None:
        """Give the greedy hypotheses of ``rows``, which just ended, to ``finished``."""
        assert self.attention is not None
        lengths, scores = self.lengths[rows].tolist(), self.scores[rows].tolist()
        tokens, attention = self.tokens[rows].tolist(), self.attention[rows].cpu()
        for k, row in enumerate(rows.tolist()):
            length = lengths[k]
            ids = tokens[k][:length]
            hypothesis = Hypothesis(ids[:-1] if ids[-1] == EOS_ID else ids, scores[k], attention[k, :length])
            finished.add_if_new(self.sentence_ids[row], hypothesis)


class _FinishedHypotheses:
    """Finished hypotheses of every sentence in the batch, best first by normalized score."""

    def __init__(self, src_lengths: list[int], nbest: int, penalties: _LengthPenalties) -> None:
        self.src_lengths = src_lengths
        self.nbest = nbest
        self.penalties = penalties
        self.by_sentence: list[list[tuple[float, Hypothesis]]] = [[] for _ in src_lengths]

    def add(self, sentence: int, hypothesis: Hypothesis) -> None:
        """Keep a hypothesis of input row ``sentence``, its attention cut to the source length."""
        hypothesis.attention = hypothesis.attention[:, : self.src_lengths[sentence]].clone()
        entries = self.by_sentence[sentence]
        entries.append((hypothesis.score / self.penalties.values[hypothesis.length], hypothesis))
        entries.sort(key=lambda entry: entry[0], reverse=True)  # stable: earlier ones win ties

    def add_if_new(self, sentence: int, hypothesis: Hypothesis) -> None:
        """`add` a hypothesis unless one with the same tokens is there already."""
        if all(kept.tokens != hypothesis.tokens for _, kept in self.by_sentence[sentence]):
            self.add(sentence, hypothesis)

    def threshold(self, sentence: int) -> float:
        """The normalized score a hypothesis must beat to make the n-best list: -inf until it is full."""
        entries = self.by_sentence[sentence]
        return entries[self.nbest - 1][0] if len(entries) >= self.nbest else float("-inf")

    def best(self) -> list[list[Hypothesis]]:
        """The ``nbest`` best hypotheses of each sentence, best first."""
        return [[hypothesis for _, hypothesis in entries[: self.nbest]] for entries in self.by_sentence]


def _candidates(log_probs: VocabularyBlocks, scores: Tensor, count: int) -> tuple[Tensor, Tensor, Tensor]:
    """The ``count`` best extensions of each sentence's prefixes, best first: total scores, prefix and token
    (`VocabularyBlocks.best_extensions` of the log-probabilities ``[n*r, V]`` by ``scores`` ``[n, r]``). Where
    fewer exist (one prefix, a vocabulary smaller than ``count``) the rest are impossible: score -inf, token PAD."""
    (n, rows), vocab = scores.shape, log_probs.values.shape[1]
    found = log_probs.best_extensions(scores, min(count, rows * vocab))
    if rows * vocab >= count:
        return found
    missing = count - rows * vocab
    total, prefix, token = found
    return (
        torch.cat([total, total.new_full((n, missing), float("-inf"))], dim=1),
        torch.cat([prefix, prefix.new_zeros(n, missing)], dim=1),
        torch.cat([token, token.new_full((n, missing), PAD_ID)], dim=1),
    )


def _forbid_specials(log_probs: Tensor) -> Tensor:
    """``log_probs`` with PAD and BOS made impossible (in place: it is a fresh tensor)."""
    log_probs[:, PAD_ID] = float("-inf")
    log_probs[:, BOS_ID] = float("-inf")
    return log_probs


def _ended_length(row: list[int]) -> tuple[int, int]:
    """Tokens before a row's EOS or padding, and the steps taken (EOS included)."""
    length = next((k for k, token in enumerate(row) if token in (EOS_ID, PAD_ID)), len(row))
    return length, length + (length < len(row) and row[length] == EOS_ID)


def _to_hypotheses(tokens: Tensor, scores: Tensor, attention: Tensor, src_lengths: Tensor) -> list[Hypothesis]:
    """Cut each row at its EOS (or the padding after its length cap) and wrap it as a `Hypothesis`."""
    hypotheses = []
    for row, score, weights, src_length in zip(tokens.tolist(), scores.tolist(), attention, src_lengths.tolist()):
        length, steps = _ended_length(row)
        hypotheses.append(Hypothesis(row[:length], score, weights[:steps, :src_length].cpu()))
    return hypotheses
