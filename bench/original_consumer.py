"""BASELINE for `brewline bench --brokers`: what the original Python pipeline's recommender did
per event, for comparison only (it is not part of brewline).

As the original: kafka-python with auto-commit, redis-py with one round trip per command and no
pipelining. Per `orders` event: HSET of the order's header + EXPIRE. Per `order_details` event:
INCR message_count + EXPIRE, SADD ordered_products + EXPIRE, HGETALL of the header; when the
count reaches num_products (the original's completion test, which redeliveries break): two
SISMEMBER (diamond customer, ACB method), KEYS product:* and HGETALL of each product, and SET
order_status; when eligible, a random product not in the order and two sends (the suggestion
and the order's status).

It reads from the earliest offset (the original used `latest`, which would read nothing of a
prepared topic) and stops after `--expect` records, printing one JSON line of figures.
"""

import argparse
import json
import random
import sys
import time

import redis
from kafka import KafkaConsumer, KafkaProducer


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--brokers", required=True)
    p.add_argument("--redis-static", required=True)
    p.add_argument("--redis-dynamic", required=True)
    p.add_argument("--orders-topic", required=True)
    p.add_argument("--order-details-topic", required=True)
    p.add_argument("--suggestions-topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--expect", type=int, required=True, help="records to read before stopping")
    p.add_argument("--ttl", type=int, default=90)
    p.add_argument("--fetch-wait-ms", type=int, default=10)
    a = p.parse_args()

    static = redis.Redis.from_url(a.redis_static)
    dynamic = redis.Redis.from_url(a.redis_dynamic)
    consumer = KafkaConsumer(
        a.orders_topic,
        a.order_details_topic,
        bootstrap_servers=a.brokers.split(","),
        group_id=a.group,
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        fetch_max_wait_ms=a.fetch_wait_ms,
    )
    producer = KafkaProducer(bootstrap_servers=a.brokers.split(","))

    records = lines = suggestions = 0
    started = None
    for message in consumer:
        if started is None:
            started = time.monotonic()
        records += 1
        if message.value is not None:
            event = json.loads(message.value)
            payload = event.get("payload", event)
            row = payload.get("after") or {}
            if message.topic == a.orders_topic and row:
                key = f"order_info:{row['id']}"
                dynamic.hset(
                    key,
                    mapping={
                        "customer_id": row.get("customer_id") or 0,
                        "payment_method_id": row["payment_method_id"],
                        "num_products": row["num_products"],
                    },
                )
                dynamic.expire(key, a.ttl)
            elif message.topic == a.order_details_topic and row:
                lines += 1
                order = row["order_id"]
                count = dynamic.incr(f"message_count:{order}")
                dynamic.expire(f"message_count:{order}", a.ttl)
                dynamic.sadd(f"ordered_products:{order}", row["product_id"])
                dynamic.expire(f"ordered_products:{order}", a.ttl)
                info = dynamic.hgetall(f"order_info:{order}")
                if info and count >= int(info[b"num_products"]):
                    # On every completed order, as the original: both lookups, then the whole
                    # menu with KEYS and one HGETALL per product.
                    diamond = static.sismember("diamond_customers", info[b"customer_id"])
                    acb = static.sismember("bank_acb_payment", info[b"payment_method_id"])
                    menu = {}
                    for key in static.keys("product:*"):
                        menu[key.decode()[len("product:"):]] = static.hgetall(key)
                    if diamond and acb:
                        ordered = dynamic.smembers(f"ordered_products:{order}")
                        choices = [p for p in menu if p.encode() not in ordered]
                        if choices:
                            product = random.choice(choices)
                            suggestion = {
                                "order_id": order,
                                "product_id": product,
                                "product_name": menu[product][b"name"].decode(),
                                "unit_price": int(menu[product][b"unit_price"]),
                                "is_suggestion": True,
                            }
                            producer.send(a.suggestions_topic, json.dumps(suggestion).encode())
                            producer.send(
                                a.suggestions_topic,
                                json.dumps({"order_id": order, "status": "completed"}).encode(),
                            )
                            suggestions += 1
                    dynamic.set(f"order_status:{order}", "completed", ex=a.ttl)
        if records >= a.expect:
            break
    producer.flush()
    seconds = time.monotonic() - (started or time.monotonic())
    print(
        json.dumps(
            {
                "records": records,
                "line_events": lines,
                "suggestions": suggestions,
                "seconds": seconds,
                "line_events_per_second": lines / seconds if seconds > 0 else 0,
            }
        )
    )
    consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
