"""The seed's decision, as the Python test clients (tests/*_client.py) send it: all 13
fields, the time now, and any extra or overriding fields."""
import time


def decision(symbol, plan_id, **extra):
    d = {
        "ts_epoch": str(int(time.time())),
        "symbol": symbol,
        "plan_id": plan_id,
        "in_action": "FULL_CLOSE_PROPOSED",
        "out_action": "FULL_CLOSE_PROPOSED",
        "heat_level": "cold",
        "heat_score": "0.25",
        "heat_action": "NONE",
        "recommended_partial": "",
        "reason": "ok",
        "inputs_age_sec": "",
        "mode": "shadow",
        "debug_json": "{}",
    }
    d.update(extra)
    return d
