<?php
// The app of contrib/bench/reload.sh, served by php-fpm and by herd alike.
// It answers with its deploy's version, set as env[APP_VERSION] in the pool
// config (a new version = a new value, then a reload). With ?burn=MS it first
// burns MS milliseconds of CPU in a busy loop on microtime(), not sleep():
// php-fpm's reload sends SIGQUIT to its workers, which would cut a sleep short.
$version = getenv('APP_VERSION');
if ($version === false || $version === '') {
    $version = 'unset';
}
$burn = isset($_GET['burn']) ? (int) $_GET['burn'] : 0;
$spins = 0;
if ($burn > 0) {
    $end = microtime(true) + $burn / 1000;
    while (microtime(true) < $end) {
        $spins++;
    }
}
header('Content-Type: text/plain');
echo "version=$version pid=" . getmypid() . ($burn > 0 ? " burn={$burn}ms spins=$spins" : '') . "\n";
