-- Refunds a booking's charge once; no row when nothing was charged.
UPDATE airline_simulated_charges
SET refunded_at = coalesce(refunded_at, now())
WHERE booking_id = $1
RETURNING amount, currency
