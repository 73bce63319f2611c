#!/usr/bin/env python3
"""Bounded load test of `vitengine serve` on loopback (standard library only).

Each of C client threads keeps one HTTP/1.1 connection and sends POST /v1/predict
with one image, back to back, until it has sent --requests requests or --duration
seconds have passed. Reports requests/s, latency percentiles and errors as JSON.
Only loopback addresses are accepted: this is not a tool for loading other machines.

  tools/loadtest.py --url http://127.0.0.1:8080 --image cell.jpg --clients 8 32 --duration 20 --requests 200
"""
import argparse, http.client, json, os, sys, threading, time, urllib.parse, uuid


def multipart(path):
    boundary = uuid.uuid4().hex
    with open(path, 'rb') as f:
        data = f.read()
    name = os.path.basename(path)
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            f'Content-Type: application/octet-stream\r\n\r\n').encode() + data + f'\r\n--{boundary}--\r\n'.encode()
    return body, f'multipart/form-data; boundary={boundary}'


def percentile(sorted_ms, p):
    if not sorted_ms:
        return None
    k = max(0, min(len(sorted_ms) - 1, int(round(p / 100 * len(sorted_ms) + 0.5)) - 1))  # nearest rank
    return round(sorted_ms[k], 2)


def run(host, port, bodies, clients, max_requests, duration, timeout):
    lat, errors, codes, retries = [], [], {}, [0]
    lock = threading.Lock()
    stop_at = time.time() + duration

    def worker(i):
        conn = None
        body, ctype = bodies[i % len(bodies)]
        for _ in range(max_requests):
            if time.time() > stop_at:
                break
            t0 = time.perf_counter()
            try:
                reused = conn is not None
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=timeout)
                try:
                    conn.request('POST', '/v1/predict', body=body, headers={'Content-Type': ctype})
                    r = conn.getresponse()
                except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
                    # A kept-alive connection the server had already closed: like browsers,
                    # retry once on a new connection (counted in "retries"); a failure there is an error.
                    if not reused:
                        raise
                    conn.close()
                    with lock:
                        retries[0] += 1
                    conn = http.client.HTTPConnection(host, port, timeout=timeout)
                    conn.request('POST', '/v1/predict', body=body, headers={'Content-Type': ctype})
                    r = conn.getresponse()
                payload = r.read()
                ms = (time.perf_counter() - t0) * 1000
                ok = r.status == 200 and b'"results"' in payload
                with lock:
                    codes[r.status] = codes.get(r.status, 0) + 1
                    (lat.append(ms) if ok else errors.append(f'HTTP {r.status}: {payload[:120]!r}'))
                if r.getheader('Connection', '').lower() == 'close':
                    conn.close()
                    conn = None
            except Exception as e:  # connection refused / reset / timeout all count as errors
                with lock:
                    errors.append(f'{type(e).__name__}: {e}')
                if conn:
                    conn.close()
                conn = None
        if conn:
            conn.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat.sort()
    return {'clients': clients, 'requests': len(lat) + len(errors), 'ok': len(lat), 'errors': len(errors), 'retries': retries[0],
            'error_samples': errors[:5], 'status_codes': {str(k): v for k, v in sorted(codes.items())},
            'wall_s': round(wall, 2), 'req_per_s': round(len(lat) / wall, 2) if wall > 0 else None,
            'latency_ms': {'p50': percentile(lat, 50), 'p90': percentile(lat, 90), 'p99': percentile(lat, 99),
                           'max': round(lat[-1], 2) if lat else None}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--url', required=True, help='server base URL, loopback only')
    ap.add_argument('--image', action='append', required=True, help='image to send (repeat to rotate several)')
    ap.add_argument('--clients', type=int, nargs='+', default=[8, 32])
    ap.add_argument('--requests', type=int, default=100, help='at most this many requests per client')
    ap.add_argument('--duration', type=float, default=30, help='at most this many seconds per concurrency level')
    ap.add_argument('--timeout', type=float, default=60, help='per-request timeout in seconds')
    ap.add_argument('--warmup', type=int, default=2, help='requests sent once before measuring')
    a = ap.parse_args()
    u = urllib.parse.urlparse(a.url)
    if u.hostname not in ('127.0.0.1', 'localhost', '::1'):
        sys.exit('loadtest: only loopback servers (127.0.0.1, localhost, ::1) may be loaded')
    if not (1 <= a.requests <= 10000 and 0 < a.duration <= 600 and all(1 <= c <= 256 for c in a.clients)):
        sys.exit('loadtest: keep it bounded: --requests 1..10000, --duration <= 600 s, --clients 1..256')
    bodies = [multipart(p) for p in a.image]
    if a.warmup:
        run(u.hostname, u.port, bodies, 1, a.warmup, a.duration, a.timeout)
    results = [run(u.hostname, u.port, bodies, c, a.requests, a.duration, a.timeout) for c in a.clients]
    print(json.dumps(results, indent=1))
    return 0 if all(r['errors'] == 0 for r in results) else 1


if __name__ == '__main__':
    sys.exit(main())
