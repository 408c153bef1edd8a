-- 0002: the default watchlist: liquid stocks and ETFs, and the main indices.
-- Runs once; later edits (INSERT, UPDATE ... SET active = false) are the users' and are kept.
INSERT INTO market.watchlist (symbol, asset_class) VALUES
    ('AAPL', 'stocks'), ('MSFT', 'stocks'), ('NVDA', 'stocks'), ('AMZN', 'stocks'),
    ('GOOGL', 'stocks'), ('META', 'stocks'), ('TSLA', 'stocks'), ('JPM', 'stocks'),
    ('SPY', 'stocks'), ('QQQ', 'stocks'), ('IWM', 'stocks'), ('DIA', 'stocks'),
    ('I:SPX', 'indices'), ('I:NDX', 'indices'), ('I:DJI', 'indices'), ('I:RUT', 'indices'),
    ('I:VIX', 'indices')
ON CONFLICT (symbol) DO NOTHING;
