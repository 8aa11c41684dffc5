-- wrk script for the "queue" case of ./run: every request is a POST of a small
-- JSON body (BENCH_BODY from the environment, which ./run sets to the body it
-- checked the case with; a 64-byte default otherwise).
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
  or '{"id":"evt_42","type":"order.paid","amount":"100.00","cur":"EUR"}'
wrk.headers["Content-Type"] = "application/json"
