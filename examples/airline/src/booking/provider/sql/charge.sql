-- Charges a booking once: a second charge answers the first one's payment id.
INSERT INTO airline_simulated_charges (booking_id, payment_id, amount, currency)
VALUES ($1, $2, $3, $4)
ON CONFLICT (booking_id) DO UPDATE SET booking_id = EXCLUDED.booking_id
RETURNING payment_id
