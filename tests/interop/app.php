<?php
// The php-cgi row's script: body and `?ms=N` as the other interop workers.
$end = microtime(true) + (int)($_GET['ms'] ?? 0) / 1000;
while (microtime(true) < $end) {
    usleep(10000);
}
header('Content-Type: text/plain');
echo 'lib=php pid=', getmypid(), ' gen=', getenv('HERD_GENERATION');
