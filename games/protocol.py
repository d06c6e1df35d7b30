"""The :class:`Game` protocol, which every board game implements, and the registry that finds games by name.

A game is a ground-truth token source: it plays random legal games, turns them into tokens, labels every
token with the board it leaves, and names the squares and the per-square classes the board metrics score.
Experiments, datasets and the command line look games up by name (:func:`get_game`) and never branch on
one. Othello and chess are registered when :mod:`games` is imported; a new game subclasses :class:`Game`,
writes its rules and is registered with one call::

    from games import Game, register_game

    @register_game
    class Connect4(Game):
        name = "connect4"
        ...  # token_names, label_names, board, Games, n_ctx, random_games, tokenize, ... (see Game)

What a game derives from its rules (token batches, next-token distributions, training streams) is written
once, here.
"""

from __future__ import annotations

import inspect
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, TypeVar

import numpy as np
import torch

from groundtruth.checks import check_int
from groundtruth.latents import TokenBatch

PAD = 0  # every game's token 0 pads a sequence after its game's end

G = TypeVar("G")


@dataclass(frozen=True)
class Board:
    """What the board metrics and figures need to know about a game's board.

    ``squares``: the name of each square, as label names write it (``f"{class}@{square}"``).
    ``classes``: the classes one of which holds on every square of every position (Othello's mine, theirs
    and empty; chess's blank and the twelve pieces): what a linear probe reads and coverage scores.
    ``empty``: the class of an empty square, which board reconstruction leaves out (as Karvonen et al. 2024
    report it). ``rows``: the squares as drawn, top row first; ``row_names`` and ``column_names`` label them.
    """

    squares: tuple[str, ...]
    classes: tuple[str, ...]
    empty: str
    rows: tuple[tuple[int, ...], ...]
    row_names: tuple[str, ...]
    column_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(set(self.squares)) != len(self.squares) or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"squares and classes must be distinct, got {self.squares} and {self.classes}")
        if self.empty not in self.classes:
            raise ValueError(f"empty must be one of the classes {self.classes}, got {self.empty!r}")
        drawn = sorted(s for row in self.rows for s in row)
        if drawn != list(range(len(self.squares))) or len({len(row) for row in self.rows}) != 1:
            raise ValueError(f"rows must draw every square once, in rows of one length, got {self.rows}")
        if len(self.row_names) != len(self.rows) or len(self.column_names) != len(self.rows[0]):
            raise ValueError(f"{len(self.rows)} rows of {len(self.rows[0])} squares need as many row and column names")

    @property
    def pieces(self) -> tuple[str, ...]:
        """The classes without the empty one: what board reconstruction scores."""
        return tuple(c for c in self.classes if c != self.empty)


class Game(ABC):
    """A board game as a token source. Subclasses declare what the game is and write its rules; the rest is
    derived here, the same for every game.

    Declarations (class attributes or properties): :attr:`name`, :attr:`token_names` (token :data:`PAD` pads),
    :attr:`label_names`, :attr:`board`, :attr:`Games` and :attr:`n_ctx`. Rules: :meth:`random_games`,
    :meth:`tokenize`, :meth:`detokenize`, :meth:`labels` and :meth:`legal_tokens`.

    Alignment, the same in every game: ``tokenize(games)[:, t]`` is token ``t`` of each game (at least
    ``n_ctx + 1`` of them, :data:`PAD` after the end), ``labels(games)[:, t]`` describes the position token
    ``t`` leaves, for the player who moves next, and is all False where the token is :data:`PAD`; a model
    reads tokens ``0 … n_ctx - 1`` and predicts tokens ``1 … n_ctx``. Options a game is made with (chess's
    ``max_plies``) are the keyword arguments of its constructor (:func:`game_options`).
    """

    @property
    @abstractmethod
    def name(self) -> str:
        """The name the registry, datasets, experiment folders and the command line know the game by."""

    @property
    @abstractmethod
    def token_names(self) -> tuple[str, ...]:
        """The vocabulary: token ``i`` is ``token_names[i]``, and token :data:`PAD` is padding."""

    @property
    @abstractmethod
    def label_names(self) -> tuple[str, ...]:
        """The name of each label column, ``property@square`` or a flag of the whole position."""

    @property
    @abstractmethod
    def board(self) -> Board:
        """The squares, the per-square classes and how to draw them."""

    @property
    @abstractmethod
    def Games(self) -> type:
        """The class :meth:`random_games` returns: a dataclass of arrays with one row per game (datasets
        save and read its fields)."""

    @property
    @abstractmethod
    def n_ctx(self) -> int:
        """The model's context: the tokens it reads per game."""

    @abstractmethod
    def random_games(self, n: int, rng: np.random.Generator) -> Any:
        """``n`` games of random legal play drawn from ``rng``, as a :attr:`Games` record."""

    @abstractmethod
    def tokenize(self, games: Any) -> np.ndarray:
        """Tokens ``[n, T]`` int64 of the games, :data:`PAD` after each game's end."""

    @abstractmethod
    def detokenize(self, tokens: np.ndarray) -> Any:
        """The games that ``tokens`` spell, replayed by the rules (the inverse of :meth:`tokenize`);
        a ``ValueError`` names the first token that is not a legal move."""

    @abstractmethod
    def labels(self, games: Any) -> np.ndarray:
        """Labels ``[n, T, len(label_names)]`` bool, row ``t`` for the position token ``t`` leaves."""

    @abstractmethod
    def legal_tokens(self, games: Any, n_ctx: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every legal next token after each token ``t < n_ctx`` (default :attr:`n_ctx`) of every game
        that goes on there: arrays ``(game, t, token)``, one row per legal move."""

    @property
    def n_tokens(self) -> int:
        """Vocabulary size, the transformer's ``d_vocab``."""
        return len(self.token_names)

    def check_context(self, n_ctx: int | None) -> int:
        """``n_ctx``, or the game's own context when it is None; longer than the game's is refused."""
        if n_ctx is None:
            return self.n_ctx
        check_int("n_ctx", n_ctx)
        if n_ctx > self.n_ctx:
            raise ValueError(f"n_ctx must be at most {self.name}'s context {self.n_ctx}, got {n_ctx}")
        return n_ctx

    def token_batch(self, games: Any) -> TokenBatch:
        """The games as a token source: tokens ``[n, T]`` with their named binary labels ``[n, T, K]``."""
        labels = self.labels(games)
        return TokenBatch(torch.from_numpy(self.tokenize(games)), torch.from_numpy(labels), self.label_names, "binary")

    def next_token_probs(self, games: Any, n_ctx: int | None = None) -> np.ndarray:
        """``[n, n_ctx, n_tokens]`` float32: after each of the first ``n_ctx`` tokens, the next token's
        distribution under uniformly random play: uniform over the legal tokens, all mass on :data:`PAD`
        where the game is over."""
        n_ctx = self.check_context(n_ctx)
        g, t, token = self.legal_tokens(games, n_ctx)
        probs = np.zeros((len(games), n_ctx, self.n_tokens), dtype=np.float32)
        probs[g, t, token] = 1.0
        going = np.zeros((len(games), n_ctx), dtype=bool)
        going[g, t] = True
        probs[..., PAD] = ~going
        return probs / probs.sum(-1, keepdims=True)

    def training_batches(
        self, batch_size: int, n_ctx: int | None = None, *, soft: bool = False, seed: int = 0
    ) -> Iterator[torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
        """An endless stream of fresh random games for next-token training (new games every step: nothing
        to overfit), in the forms :func:`toymodels.transformer.train_transformer` takes, with the signature
        of :meth:`groundtruth.HMM.training_batches`.

        Hard targets: tokens ``[batch_size, n_ctx + 1]`` (inputs ``[:, :-1]``, targets ``[:, 1:]``). Soft
        targets: ``(inputs [b, n_ctx], probs [b, n_ctx, n_tokens])`` from :meth:`next_token_probs`, the
        same expected gradient as the moves played without their noise. Batch ``i`` holds the games of the
        ``i``-th :meth:`random_games` call on ``numpy.random.default_rng(seed)``.
        """
        check_int("batch_size", batch_size)
        n_ctx = self.check_context(n_ctx)
        rng = np.random.default_rng(seed)
        while True:
            games = self.random_games(batch_size, rng)
            tokens = torch.from_numpy(self.tokenize(games))
            if not soft:
                yield tokens[:, : n_ctx + 1]
                continue
            yield tokens[:, :n_ctx], torch.from_numpy(self.next_token_probs(games, n_ctx))


def select(games: G, rows: slice | np.ndarray) -> G:
    """The games at ``rows`` of a record (a dataclass of arrays with one row per game)."""
    return type(games)(*(getattr(games, f.name)[rows] for f in fields(games)))


_GAMES: dict[str, type[Game]] = {}
GAMES: Mapping[str, type[Game]] = MappingProxyType(_GAMES)  # name -> class; read-only, always current

T = TypeVar("T", bound=type[Game])


def register_game(cls: T) -> T:
    """Make a :class:`Game` subclass available by its :attr:`~Game.name` to :func:`get_game`, datasets,
    experiments and the command line (usable as a decorator). A class that leaves a declaration or rule
    unwritten, or a second class under a name already taken, is refused."""
    if not (isinstance(cls, type) and issubclass(cls, Game)):
        raise TypeError(f"register_game needs a Game subclass, got {cls!r}")
    name = vars(cls).get("name")
    if not (isinstance(name, str) and re.fullmatch(r"[a-z][a-z0-9_-]*", name)):
        raise TypeError(f"{cls.__name__} must declare its own name (lower case, e.g. 'othello'), got {name!r}")
    if inspect.isabstract(cls):
        raise TypeError(f"{cls.__name__} does not define {', '.join(sorted(cls.__abstractmethods__))} (see Game)")
    taken = _GAMES.get(name)
    if taken is not None and taken is not cls:
        raise ValueError(f"game {name!r} is already registered by {taken.__module__}.{taken.__qualname__}")
    _GAMES[name] = cls
    return cls


def _game_class(name: str) -> type[Game]:
    try:
        return _GAMES[name]
    except (KeyError, TypeError):
        raise ValueError(f"game must be one of {sorted(_GAMES)}, got {name!r}") from None


def game_options(name: str) -> tuple[str, ...]:
    """The options game ``name`` is made with: its constructor's keyword arguments (chess: ``max_plies``,
    ``capture_weight``; Othello: none)."""
    parameters = inspect.signature(_game_class(name)).parameters.values()
    return tuple(p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def get_game(name: str, **options: Any) -> Game:
    """The game registered as ``name``, made with ``options`` (see :func:`game_options`)."""
    cls, allowed = _game_class(name), game_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        takes = f"the options {', '.join(allowed)}" if allowed else "no options"
        raise ValueError(f"{name} takes {takes}, got {unknown}")
    return cls(**options)
