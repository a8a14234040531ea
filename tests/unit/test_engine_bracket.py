"""A bracket through the engine, the emulator and the paper venue, by hand:
entry BUY 1.0000 ETH limit 2000 fills (fee 0.0010 ETH), the take-profit and
the stop-loss are released as an OCO sized to the 0.9990 held; the
take-profit fills at 2100 and the stop is canceled."""

import asyncio
from decimal import Decimal

from core.enums import OrderSide, OrderStatus, OrderType, TimeInForce
from core.orders import Order
from tests.unit.test_engine import IID, build

D = Decimal


def test_bracket_end_to_end(tmp_path):
    # bars: 3 at 2000 (low 1999), then low 1990 (entry fills at 2000), then a rally with high 2101
    closes = ["2000", "2000", "2000", "2000", "2050", "2100", "2100"]
    lows = ["1999", "1999", "1999", "1990", "2040", "2090", "2090"]
    eng = build(tmp_path, closes, ["0"], lows=lows)
    asyncio.run(eng.warm_up())

    async def scenario():
        await eng.run(max_bars=3)
        entry = Order("NHD-B-1", "m0", IID, OrderSide.BUY, OrderType.LIMIT, D("1.0000"), D("2000.00"),
                      TimeInForce.GTC, eng.clock.timestamp_ns(), eng.stats.bars)
        br = eng.emulator.submit_bracket(entry, take_profit_price=D("2100.00"), stop_trigger_price=D("1900.00"))
        await eng.send_pending()
        await eng.run()
        for _ in range(5):
            await asyncio.sleep(0)
        await eng.send_pending()
        return br

    br = asyncio.run(scenario())
    entry, tp, sl = eng.orders[br.entry_id], eng.orders[br.take_profit_id], eng.orders[br.stop_loss_id]
    assert entry.status == OrderStatus.FILLED and entry.filled_qty == D("1.0000")
    # legs sized to what the entry left after its fee: 1.0000 - 0.0010 = 0.9990
    assert tp.quantity == D("0.9990") and sl.quantity == D("0.9990")
    # the 2100 bar: high 2101 > 2100 -> take-profit fills at 2100; its OCO sibling is canceled
    assert tp.status == OrderStatus.FILLED and tp.avg_px == D("2100.00")
    assert sl.status == OrderStatus.CANCELED
    pos = eng.portfolio.position("m0", IID)
    assert pos.quantity == 0
    # realized = 0.9990 * 2100 - 0.1 % fee - 2000 = 2097.90 - 2.0979 - 2000 = 95.8021 (the issue-2 value)
    assert pos.realized == D("95.8021")
    assert eng.venue.balance("ETH") == 0 and not eng.working_orders()
