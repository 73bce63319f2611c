#!/usr/bin/env python3
"""Browser test of the `vitengine serve` web page: headless Chromium, driven over the
DevTools protocol (standard library only: a minimal WebSocket client is below).

It starts the real server on a free loopback port, opens /, puts a cell image into
the page's file input (DOM.setFileInputFiles: the same path as a user choosing a
file), waits for the page to finish, and checks that the predicted class is one of
GET /v1/classes, that the chart has one bar per class and that the attention overlay
loaded. It can save a screenshot.

  tests/serve_browser.py --binary build/vitengine --model M.vit --image cell.jpg [--image b.jpg] \
      [--screenshot docs/serve.png]

Exit codes: 0 pass, 1 fail, 77 skipped (no Chromium on this machine).
"""
import argparse, base64, json, os, re, shutil, socket, struct, subprocess, sys, tempfile, time, urllib.request

SKIP = 77


class WebSocket:
    """Just enough of RFC 6455 for the DevTools protocol: text frames, client masking."""

    def __init__(self, url, timeout=60):
        m = re.match(r'ws://([^:/]+):(\d+)(/.*)', url)
        self.sock = socket.create_connection((m.group(1), int(m.group(2))), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f'GET {m.group(3)} HTTP/1.1\r\nHost: {m.group(1)}:{m.group(2)}\r\nUpgrade: websocket\r\n'
                           f'Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n').encode())
        head = b''
        while b'\r\n\r\n' not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise IOError('websocket handshake: connection closed')
            head += chunk
        if b' 101 ' not in head.split(b'\r\n')[0]:
            raise IOError('websocket handshake failed: ' + head.decode(errors='replace'))

    def _exact(self, n):
        buf = b''
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise IOError('websocket closed')
            buf += chunk
        return buf

    def _send(self, opcode, payload):
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack('>H', n)
        else:
            head += bytes([0x80 | 127]) + struct.pack('>Q', n)
        mask = os.urandom(4)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def send(self, text):
        self._send(0x1, text.encode())

    def recv(self):
        data = b''
        while True:
            b0, b1 = self._exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack('>H', self._exact(2))[0]
            elif n == 127:
                n = struct.unpack('>Q', self._exact(8))[0]
            mask = self._exact(4) if b1 & 0x80 else None
            payload = self._exact(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            op = b0 & 0x0F
            if op == 0x9:  # ping
                self._send(0xA, payload)
                continue
            if op == 0x8:
                raise IOError('websocket closed by peer')
            data += payload
            if b0 & 0x80:
                return data.decode()


class DevTools:
    def __init__(self, ws_url):
        self.ws = WebSocket(ws_url)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({'id': self.next_id, 'method': method, 'params': params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get('id') == self.next_id:
                if 'error' in msg:
                    raise RuntimeError(f'{method}: {msg["error"]}')
                return msg.get('result', {})

    def evaluate(self, expr):
        r = self.call('Runtime.evaluate', expression=expr, returnByValue=True, awaitPromise=True)
        return r.get('result', {}).get('value')


def find_chromium():
    for name in ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable'):
        path = shutil.which(name)
        if path:
            return path
    return None


def start_server(binary, model, tls):
    extra = ['--tls-cert', tls[0], '--tls-key', tls[1]] if tls else []
    proc = subprocess.Popen([binary, 'serve', '--port', '0', '--model', model] + extra, stdout=subprocess.PIPE,
                            stderr=sys.stderr, text=True)
    line = proc.stdout.readline()
    m = re.search(r'listening on (https?://127\.0\.0\.1:\d+)/', line)
    if not m:
        proc.kill()
        raise RuntimeError('server did not start: ' + line)
    return proc, m.group(1)


def start_chromium(exe, profile):
    # --ignore-certificate-errors: the HTTPS run's certificate is self-signed, made by the test.
    proc = subprocess.Popen([exe, '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
                             '--ignore-certificate-errors',
                             '--no-first-run', '--no-default-browser-check', '--disable-extensions',
                             '--remote-debugging-address=127.0.0.1', '--remote-debugging-port=0',
                             f'--user-data-dir={profile}', 'about:blank'],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stderr.readline()
        m = re.search(r'DevTools listening on ws://127\.0\.0\.1:(\d+)/', line)
        if m:
            return proc, int(m.group(1))
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError('chromium did not start')


def page_ws_url(port):
    deadline = time.time() + 30
    while time.time() < deadline:
        with urllib.request.urlopen(f'http://127.0.0.1:{port}/json/list', timeout=10) as r:
            pages = [t for t in json.load(r) if t.get('type') == 'page']
        if pages:
            return pages[0]['webSocketDebuggerUrl']
        time.sleep(0.2)
    raise RuntimeError('no page target in chromium')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--binary', required=True)
    ap.add_argument('--model', required=True)
    ap.add_argument('--image', action='append', required=True, help='image(s) to upload (repeat for several)')
    ap.add_argument('--screenshot', help='save a PNG of the page here')
    ap.add_argument('--timeout', type=float, default=120)
    ap.add_argument('--tls-cert', help='serve HTTPS with this PEM certificate (and --tls-key)')
    ap.add_argument('--tls-key')
    a = ap.parse_args()

    exe = find_chromium()
    if not exe:
        print('SKIP: no chromium on this machine (Debian package: chromium)')
        return SKIP
    tls = (a.tls_cert, a.tls_key) if a.tls_cert else None
    server, base = start_server(a.binary, a.model, tls)
    import ssl
    ctx = ssl._create_unverified_context() if tls else None  # the test's own self-signed certificate
    profile = tempfile.mkdtemp(prefix='vitengine_chromium_')
    browser = None
    try:
        with urllib.request.urlopen(base + '/v1/classes', timeout=30, context=ctx) as r:
            class_names = [c['name'] for c in json.load(r)['classes']]
        browser, port = start_chromium(exe, profile)
        dt = DevTools(page_ws_url(port))
        dt.call('Emulation.setDeviceMetricsOverride', width=1200, height=1000, deviceScaleFactor=1, mobile=False)
        dt.call('Page.enable')
        dt.call('Page.navigate', url=base + '/')
        deadline = time.time() + a.timeout
        while dt.evaluate("document.readyState + ':' + !!document.querySelector('#file')") != 'complete:true':
            if time.time() > deadline:
                raise RuntimeError('page did not load')
            time.sleep(0.1)
        root = dt.call('DOM.getDocument')['root']['nodeId']
        node = dt.call('DOM.querySelector', nodeId=root, selector='#file')['nodeId']
        dt.call('DOM.setFileInputFiles', nodeId=node, files=[os.path.abspath(p) for p in a.image])
        probe = """JSON.stringify({
          state: document.body.getAttribute('data-state'),
          status: document.querySelector('#status').textContent,
          preds: Array.from(document.querySelectorAll('.pred-class')).map(e => e.textContent),
          bars: Array.from(document.querySelectorAll('svg.chart')).map(s => s.querySelectorAll('rect.bar').length),
          overlays: Array.from(document.querySelectorAll('img.overlay')).map(i => i.naturalWidth),
          notes: Array.from(document.querySelectorAll('.notes')).map(n => n.textContent.length),
          diff: document.querySelectorAll('#diff-table tr').length })"""
        while True:
            st = json.loads(dt.evaluate(probe))
            if st['state'] == 'done' or 'Error' in st['status']:
                break
            if time.time() > deadline:
                raise RuntimeError('page did not finish: ' + json.dumps(st))
            time.sleep(0.2)
        if a.screenshot:
            png = base64.b64decode(dt.call('Page.captureScreenshot', format='png')['data'])
            tmp = a.screenshot + '.tmp'
            with open(tmp, 'wb') as f:
                f.write(png)
            os.replace(tmp, a.screenshot)
        print(json.dumps(st))
        fails = []
        n = len(a.image)
        if len(st['preds']) != n:
            fails.append(f'expected {n} predictions, page shows {len(st["preds"])} ({st["status"]})')
        fails += [f'predicted class {p!r} is not a model class' for p in st['preds'] if p not in class_names]
        fails += [f'chart has {b} bars, expected {len(class_names)}' for b in st['bars'] if b != len(class_names)]
        if len(st['bars']) != n:
            fails.append('a chart is missing')
        fails += ['an attention overlay did not load' for w in st['overlays'] if not w]
        fails += ['class notes are empty' for x in st['notes'] if x == 0]
        if n >= 2 and st['diff'] < 8:
            fails.append('differential table missing for several images')
        for f in fails:
            print('FAIL:', f)
        print('PASS' if not fails else 'FAILED')
        return 1 if fails else 0
    finally:
        if browser:
            browser.kill()
            browser.wait()
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
