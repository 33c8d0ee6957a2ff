"""What operators declare: typed models, validation and referential integrity, and the store behind them."""
