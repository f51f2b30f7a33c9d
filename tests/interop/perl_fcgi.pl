#!/usr/bin/perl
# A Perl FCGI worker as FCGI's documentation writes one: FCGI::Request() on
# the listening socket the manager passes as fd 0, and the Accept loop.
# Its body names the library, the process and herd's generation;
# `?ms=N` sleeps N ms first (a signal does not cut the sleep short).
use strict;
use warnings;
use FCGI;
use Time::HiRes ();

# Accept replaces %ENV with the request's params: read the worker's own
# environment first.
my $gen = $ENV{HERD_GENERATION} // '';
my $request = FCGI::Request();
while ($request->Accept() >= 0) {
    my ($ms) = ($ENV{QUERY_STRING} // '') =~ /(?:^|&)ms=(\d+)/;
    my $end = Time::HiRes::time() + ($ms // 0) / 1000;
    while ((my $left = $end - Time::HiRes::time()) > 0) { Time::HiRes::sleep($left) }
    print "Content-Type: text/plain\r\n\r\nlib=perl-fcgi pid=$$ gen=$gen";
}
