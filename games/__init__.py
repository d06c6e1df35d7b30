"""Board games as ground-truth sources (Othello, chess). Arrives with the board-game issue."""
