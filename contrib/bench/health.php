<?php
// Health check of contrib/bench/reload.sh: herd sends it to every new worker
// (warmup.request[] = /health.php) and lets the worker take traffic only on a
// 2xx. A broken deploy (e.g. an auto_prepend_file that does not exist) makes
// it fail like every other script, so herd refuses the deploy.
header('Content-Type: text/plain');
echo "ok version=" . getenv('APP_VERSION') . "\n";
