// The frame around every page: sidebar (a drawer on phones), header with refresh,
// language, theme and logout, and the database-maintenance banner.
import type { ComponentChildren } from 'preact';
import { useEffect, useState } from 'preact/hooks';

import { logOut } from '../lib/api';
import { api } from '../lib/endpoints';
import { t, type MessageKey } from '../lib/i18n';
import { refreshAll, useResource } from '../lib/resource';
import { route } from '../lib/router';
import { useStore } from '../lib/store';
import { DisplayControls } from './DisplayControls';
import { Toasts } from './Toast';

export interface NavItem {
  path: string;
  label: MessageKey;
  icon: string;
}

/** Sidebar sections, in order. Accounts, config, providers, OAuth, logs and plugins join later. */
export const NAV: { label: MessageKey; items: NavItem[] }[] = [
  {
    label: 'nav.sectionOverview',
    items: [
      { path: '/', label: 'nav.dashboard', icon: '◧' },
      { path: '/usage-analytics', label: 'nav.analytics', icon: '◔' },
      { path: '/monitoring', label: 'nav.monitor', icon: '≋' },
    ],
  },
  { label: 'nav.sectionCosts', items: [{ path: '/model-prices', label: 'nav.prices', icon: '$' }] },
  { label: 'nav.sectionData', items: [{ path: '/transfer', label: 'nav.transfer', icon: '⇅' }] },
  { label: 'nav.sectionServer', items: [{ path: '/system', label: 'nav.system', icon: '⚙' }] },
];

export function pageTitle(path: string): MessageKey {
  for (const section of NAV) {
    for (const item of section.items) if (item.path === path) return item.label;
  }
  return 'nav.dashboard';
}

export function Shell({ children }: { children: ComponentChildren }) {
  const current = useStore(route);
  const [drawerOpen, setDrawerOpen] = useState(false);
  const maintenance = useResource('maintenance', (signal) => api.maintenance(signal), { refreshMs: 60_000 });

  useEffect(() => setDrawerOpen(false), [current.path]);
  useEffect(() => {
    if (!drawerOpen) return;
    // Keyboard users land in the drawer they opened.
    document.querySelector<HTMLElement>('#sidebar a')?.focus();
    const onKey = (event: KeyboardEvent) => event.key === 'Escape' && setDrawerOpen(false);
    document.addEventListener('keydown', onKey);
    return () => document.removeEventListener('keydown', onKey);
  }, [drawerOpen]);

  const title = t(pageTitle(current.path));
  useEffect(() => {
    document.title = `${title} · cpamp`;
  }, [title]);

  const banner = maintenance.data?.databaseMaintenance;
  return (
    <div class={`shell ${drawerOpen ? 'drawer-open' : ''}`}>
      <a class="skip-link" href="#main">
        {t('shell.skip')}
      </a>
      <aside class="sidebar" id="sidebar" aria-label={t('shell.navigation')}>
        <div class="brand">
          <span class="brand-mark" aria-hidden="true">
            c
          </span>
          <span class="brand-name">cpamp</span>
        </div>
        <nav>
          {NAV.map((section) => (
            <div class="nav-section" key={section.label}>
              <div class="nav-section-label">{t(section.label)}</div>
              <ul>
                {section.items.map((item) => (
                  <li key={item.path}>
                    <a
                      href={`#${item.path}`}
                      class={current.path === item.path ? 'active' : ''}
                      aria-current={current.path === item.path ? 'page' : undefined}
                      data-nav={item.path}
                    >
                      <span class="nav-icon" aria-hidden="true">
                        {item.icon}
                      </span>
                      {t(item.label)}
                    </a>
                  </li>
                ))}
              </ul>
            </div>
          ))}
        </nav>
        <div class="drawer-display">
          <DisplayControls place="-drawer" />
        </div>
      </aside>
      <div class="scrim" onClick={() => setDrawerOpen(false)} aria-hidden="true" />
      <div class="main-column">
        <header class="topbar">
          <button
            type="button"
            class="icon-button menu-button"
            aria-label={t('shell.menu')}
            aria-expanded={drawerOpen}
            aria-controls="sidebar"
            onClick={() => setDrawerOpen(!drawerOpen)}
          >
            ☰
          </button>
          <h1 class="page-title">{title}</h1>
          <div class="topbar-tools">
            <button
              type="button"
              class="button"
              onClick={() => refreshAll.set((value) => value + 1)}
              data-testid="refresh-all"
              title={t('shell.refreshHint')}
            >
              <span aria-hidden="true">↻ </span>
              <span class="hide-narrow">{t('shell.refresh')}</span>
              <span class="visually-hidden narrow-only">{t('shell.refresh')}</span>
            </button>
            <span class="display-wide">
              <DisplayControls />
            </span>
            <button type="button" class="button" onClick={() => logOut()} data-testid="logout">
              {t('shell.logout')}
            </button>
          </div>
        </header>
        {banner?.required && (
          <div class="banner warn" role="status">
            <strong>{t('shell.maintenance')}</strong> {banner.reasons.join(', ')}
            {banner.command && <code>cpamp-server {banner.command}</code>}
          </div>
        )}
        <main id="main" tabIndex={-1}>
          {children}
        </main>
        <Toasts />
      </div>
    </div>
  );
}
