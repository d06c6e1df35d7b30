"""Chess as a :class:`~games.protocol.Game`: one UCI token per move, the labels of every position, and
ChessGPT's character tokens beside them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from games.chessgame.labels import LABEL_NAMES, PIECE_CLASSES, position_labels
from games.chessgame.position import square_name
from games.chessgame.rules import Games, from_uci, random_games
from games.chessgame.tokens import UCI_VOCAB, detokenize_uci, legal_tokens, tokenize_pgn, tokenize_uci
from games.protocol import Board, Game, register_game
from groundtruth.checks import check_int, check_real
from groundtruth.latents import TokenBatch


@register_game
@dataclass(frozen=True)
class Chess(Game):
    """Chess on UCI move tokens (``<start>``, then one token per move; 1,970 tokens), the setting of the
    board-game SAE paper's chess model with moves instead of characters. ``max_plies`` caps each game and
    is the model's context; ``capture_weight`` makes random play prefer captures (see
    :func:`~games.chessgame.rules.random_games`)."""

    max_plies: int = 200
    capture_weight: float = 1.0

    name: ClassVar[str] = "chess"
    token_names: ClassVar[tuple[str, ...]] = UCI_VOCAB
    label_names: ClassVar[tuple[str, ...]] = LABEL_NAMES
    Games: ClassVar[type] = Games
    board: ClassVar[Board] = Board(
        squares=tuple(square_name(s) for s in range(64)),
        classes=PIECE_CLASSES,
        empty="blank",
        rows=tuple(tuple(range(8 * rank, 8 * rank + 8)) for rank in reversed(range(8))),  # white's view
        row_names=tuple("87654321"),
        column_names=tuple("abcdefgh"),
    )

    def __post_init__(self) -> None:
        check_int("max_plies", self.max_plies)
        check_real("capture_weight", self.capture_weight, 0.0, low_open=True)

    @property
    def n_ctx(self) -> int:
        return self.max_plies

    def random_games(self, n: int, rng: np.random.Generator) -> Games:
        return random_games(n, rng, self.max_plies, self.capture_weight)

    def tokenize(self, games: Games) -> np.ndarray:
        return tokenize_uci(games)

    def detokenize(self, tokens: np.ndarray) -> Games:
        return from_uci(detokenize_uci(tokens), max_plies=np.shape(tokens)[1] - 1)

    def labels(self, games: Games) -> np.ndarray:
        return position_labels(games)

    def legal_tokens(self, games: Games, n_ctx: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return legal_tokens(games, self.check_context(n_ctx))

    def next_token_probs(self, games: Games, n_ctx: int | None = None) -> np.ndarray:
        if self.capture_weight != 1.0:  # the distribution below is uniform play's
            raise ValueError(
                f"next-token distributions are those of uniform play; capture_weight is {self.capture_weight}"
            )
        return super().next_token_probs(games, n_ctx)


def pgn_token_batch(games: Games, n_ctx: int | None = None) -> TokenBatch:
    """The games as ChessGPT's characters (:func:`~games.chessgame.tokens.tokenize_pgn`, cut at ``n_ctx``),
    every character labelled with the position it carries, not only the ``.`` before white's moves (a flaw
    of the original harness). Padding gets no labels."""
    tokens, plies = tokenize_pgn(games, n_ctx)
    carried = position_labels(games)[np.arange(len(games))[:, None], np.maximum(plies, 0)]  # one row per character
    carried[plies < 0] = False
    return TokenBatch(torch.from_numpy(tokens), torch.from_numpy(carried), LABEL_NAMES, "binary")
