"""Board games as ground-truth token sources: the :class:`Game` protocol and its registry, Othello and chess.

Importing the package registers the built-in games (each module registers its own); ``get_game("othello")``,
``get_game("othello6")`` (6 × 6) and ``get_game("chess", max_plies=100)`` give them, and :func:`register_game`
adds yours.
"""

from games import chessgame, othello
from games.protocol import GAMES, PAD, Board, Game, game_options, get_game, register_game

__all__ = ["GAMES", "PAD", "Board", "Game", "chessgame", "game_options", "get_game", "othello", "register_game"]
