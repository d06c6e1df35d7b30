"""Chess as a ground-truth source, vectorised over a batch of games: the rules on bitboards, SAN and PGN,
the UCI and PGN tokenizers, and exact labels of every position.

Modules, lowest first: :mod:`~games.chessgame.position` (legal moves and properties of positions),
:mod:`~games.chessgame.rules` (games played to their end), :mod:`~games.chessgame.notation` (SAN, PGN),
:mod:`~games.chessgame.tokens` (UCI and character tokens), :mod:`~games.chessgame.labels` and
:mod:`~games.chessgame.game` (the :class:`Chess` game). The package is not called ``chess`` so that it
never stands in for python-chess, which it is tested against and which reads PGN for it.
"""

from games.chessgame.game import Chess, pgn_token_batch
from games.chessgame.labels import LABEL_NAMES, PIECE_CLASSES, SQUARE_PROPERTIES, Flag, SquareProperty, position_labels
from games.chessgame.notation import PGN_VOCAB, from_pgn, pgn, san
from games.chessgame.position import Castling, analyse, from_boards, insufficient_material, square_name
from games.chessgame.rules import Games, Termination, from_uci, random_games
from games.chessgame.tokens import UCI_VOCAB, detokenize_pgn, detokenize_uci, tokenize_pgn

__all__ = [
    "LABEL_NAMES",
    "PGN_VOCAB",
    "PIECE_CLASSES",
    "SQUARE_PROPERTIES",
    "UCI_VOCAB",
    "Castling",
    "Chess",
    "Flag",
    "Games",
    "SquareProperty",
    "Termination",
    "analyse",
    "detokenize_pgn",
    "detokenize_uci",
    "from_boards",
    "from_pgn",
    "from_uci",
    "insufficient_material",
    "pgn",
    "pgn_token_batch",
    "position_labels",
    "random_games",
    "san",
    "square_name",
    "tokenize_pgn",
]
