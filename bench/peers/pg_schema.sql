-- PostgreSQL peer of the suite (bench/suite.py): the same authorization ringpay makes,
-- as one transaction in one round trip (a PL/pgSQL function, like the Redis peer's one
-- Lua script): the payment row, its idempotency key (unique per merchant; a repeat
-- returns the stored answer), the two ledger rows (clearing -> pending), the balance
-- update, and the outbox row. Run with synchronous_commit=on and fsync=on: the commit
-- returns after its WAL is flushed to disk, as ringpay's answer does.
CREATE TABLE payments (
    id              bigserial PRIMARY KEY,
    merchant_id     text        NOT NULL,
    amount          bigint      NOT NULL CHECK (amount > 0),
    currency        char(3)     NOT NULL,
    status          text        NOT NULL,
    captured_amount bigint      NOT NULL DEFAULT 0,
    refunded_amount bigint      NOT NULL DEFAULT 0,
    reference       text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE idempotency (
    merchant_id text        NOT NULL,
    key         text        NOT NULL,
    payment_id  bigint      NOT NULL,
    response    text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, key)
);
CREATE TABLE ledger (
    seq         bigserial PRIMARY KEY,
    payment_id  bigint      NOT NULL,
    merchant_id text        NOT NULL,
    debit       text        NOT NULL,
    credit      text        NOT NULL,
    amount      bigint      NOT NULL,
    currency    char(3)     NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE balances (
    merchant_id text    NOT NULL,
    currency    char(3) NOT NULL,
    account     text    NOT NULL,
    balance     bigint  NOT NULL DEFAULT 0,
    PRIMARY KEY (merchant_id, currency, account)
);
CREATE TABLE outbox (
    seq         bigserial PRIMARY KEY,
    merchant_id text        NOT NULL,
    type        text        NOT NULL,
    payload     text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION authorize(p_merchant text, p_key text, p_amount bigint, p_currency text,
                          p_reference text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    pid  bigint;
    resp text;
BEGIN
    SELECT response INTO resp FROM idempotency WHERE merchant_id = p_merchant AND key = p_key;
    IF FOUND THEN
        RETURN resp; -- an idempotent replay
    END IF;
    INSERT INTO payments (merchant_id, amount, currency, status, reference)
        VALUES (p_merchant, p_amount, p_currency, 'authorized', p_reference)
        RETURNING id INTO pid;
    resp := json_build_object('id', 'pay_' || pid, 'merchant_id', p_merchant,
                              'amount', p_amount, 'currency', p_currency,
                              'status', 'authorized', 'reference', p_reference)::text;
    -- The unique key: a concurrent duplicate fails here and the transaction rolls back.
    INSERT INTO idempotency (merchant_id, key, payment_id, response)
        VALUES (p_merchant, p_key, pid, resp);
    INSERT INTO ledger (payment_id, merchant_id, debit, credit, amount, currency)
        VALUES (pid, p_merchant, 'clearing', 'pending', p_amount, p_currency);
    INSERT INTO balances (merchant_id, currency, account, balance)
        VALUES (p_merchant, p_currency, 'clearing', -p_amount),
               (p_merchant, p_currency, 'pending', p_amount)
        ON CONFLICT (merchant_id, currency, account)
        DO UPDATE SET balance = balances.balance + EXCLUDED.balance;
    INSERT INTO outbox (merchant_id, type, payload) VALUES (p_merchant, 'payment.authorized', resp);
    RETURN resp;
END
$$;
