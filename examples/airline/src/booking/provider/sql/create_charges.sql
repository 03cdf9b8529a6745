-- The simulated payment provider's own record of what it charged: the
-- provider is another system, so its table is created by the provider, not
-- by the airline's migrations.
CREATE TABLE IF NOT EXISTS airline_simulated_charges (
    booking_id  uuid        PRIMARY KEY,
    payment_id  text        NOT NULL,
    amount      bigint      NOT NULL,
    currency    text        NOT NULL,
    charged_at  timestamptz NOT NULL DEFAULT now(),
    refunded_at timestamptz
)
