-- The raw database limit for one checkout completion: the same rows Product Shop writes when it
-- turns a confirmed capture into an order (the checkout row stands in for its update), in one
-- transaction, with no application in between. Run by bench/checkout_bench.py through pgbench.
\set amount random(1000, 30000)
BEGIN;
INSERT INTO checkouts (checkout_id, patient_id, practice_id, status, currency, total_minor,
    amount_due_minor, payment_intent_id, payment_attempts, redemption_amount_minor, created_at,
    updated_at, expires_at, version)
VALUES (gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 'completed', 'GBP', :amount,
    :amount, 'pi_' || md5(random()::text), 1, 0, now(), now(), now() + interval '1 day', 2)
RETURNING checkout_id AS cid, patient_id AS pid, practice_id AS prid \gset
INSERT INTO payment_captures (transaction_ref, intent_id, checkout_id, amount_minor, currency,
    method, card_scheme, card_last4, confirmed_at)
VALUES ('DNA-' || md5(random()::text), 'pi_' || md5(random()::text), :cid, :amount, 'GBP',
    'card', 'visa', '4242', now())
RETURNING transaction_ref AS tx \gset
INSERT INTO orders (order_id, checkout_id, patient_id, practice_id, status, fulfilment_status,
    refund_status, currency, total_minor, captured_minor, refunded_minor, payment_ref,
    payment_method, created_by, created_at, updated_at, version)
VALUES (gen_random_uuid(), :cid, :pid, :prid, 'Created', 'Created', 'none', 'GBP', :amount,
    :amount, 0, :tx, 'card', :pid, now(), now(), 1)
RETURNING order_id AS oid \gset
INSERT INTO order_lines (line_item_id, order_id, line_no, product_id, product_name, quantity,
    unit_price_minor, fulfilment_type, fulfilment_status, updated_at)
SELECT gen_random_uuid(), :oid, n, (SELECT product_id FROM products ORDER BY product_id LIMIT 1),
    'Product', 1, :amount, 'Drop-Ship', 'pending', now()
FROM generate_series(1, 2) AS n;
INSERT INTO audit_entries (entry_id, stream_type, stream_id, stream_seq, recorded_at, actor_id,
    actor_role, actor_name, action, practice_id, before, after, prev_hash, entry_hash)
VALUES
 (gen_random_uuid(), 'checkout', :cid, 2, now(), :pid, 'patient', NULL, 'checkout.completed',
    :prid, '{"status": "awaiting_payment"}', '{"status": "completed"}', md5('a'), md5(random()::text) || md5(random()::text)),
 (gen_random_uuid(), 'order', :oid, 1, now(), :pid, 'patient', NULL, 'payment.captured',
    :prid, NULL, '{"payment_ref": "x"}', md5('b'), md5(random()::text) || md5(random()::text)),
 (gen_random_uuid(), 'order', :oid, 2, now(), :pid, 'patient', NULL, 'order.created',
    :prid, '{"status": null}', '{"status": "Created"}', md5('c'), md5(random()::text) || md5(random()::text));
INSERT INTO outbox_events (event_id, event_type, source, subject, aggregate_type, aggregate_id,
    occurred_at, data, status, attempts, next_attempt_at)
SELECT gen_random_uuid(), 'com.primoro.productshop.' || t, '/primoro/product-shop', :oid, 'order',
    :oid, now(), '{"order_id": "x", "amount": 1}', 'pending', 0, now()
FROM unnest(ARRAY['order.created.v1', 'payment.receipt.v1', 'revenue.sale.v1',
    'finance.order_recorded.v1', 'payment.order_reference.v1']) AS t;
COMMIT;
