// Mode detection, then the setup wizard, the login page or the routed pages.
import { session } from './lib/api';
import { api } from './lib/endpoints';
import { t } from './lib/i18n';
import { useResource } from './lib/resource';
import { route } from './lib/router';
import { settings } from './lib/settings';
import { useStore } from './lib/store';
import { Shell } from './components/Shell';
import { Boundary, ErrorNote, Spinner } from './components/ui';
import { LoginPage, SetupWizard } from './pages/Login';
import { DashboardPage } from './pages/Dashboard';
import { MonitorPage } from './pages/Monitor';
import { AnalyticsPage } from './pages/Analytics';
import { PricesPage } from './pages/Prices';
import { TransferPage } from './pages/Transfer';
import { SystemPage } from './pages/System';

/** Services whose `/usage-service/info` means "a Manager Server hosts this panel". */
const MANAGER_SERVICES = ['cpa-manager-plus', 'cpa-manager', 'cpa-usage-service'];

function Page({ path }: { path: string }) {
  switch (path) {
    case '/usage-analytics':
      return <AnalyticsPage />;
    case '/monitoring':
      return <MonitorPage />;
    case '/model-prices':
    case '/monitoring/model-prices':
      return <PricesPage />;
    case '/transfer':
      return <TransferPage />;
    case '/system':
      return <SystemPage />;
    default:
      return <DashboardPage />;
  }
}

export function App() {
  // Re-render everything when the language or zone changes.
  useStore(settings);
  const current = useStore(route);
  const auth = useStore(session);
  const info = useResource('info', (signal) => api.info(signal));

  if (info.loading && !info.data) {
    return (
      <div class="splash">
        <Spinner label={t('app.detecting')} />
      </div>
    );
  }
  if (info.error || !info.data || !MANAGER_SERVICES.includes(info.data.service)) {
    return (
      <div class="splash">
        <div class="auth-card">
          <h1>{t('app.noServerTitle')}</h1>
          <p>{t('app.noServerBody')}</p>
          {info.error ? <ErrorNote error={info.error} onRetry={info.reload} /> : null}
        </div>
      </div>
    );
  }
  if (info.data.setupRequired) return <SetupWizard info={info.data} onDone={info.reload} />;
  if (!auth) return <LoginPage />;
  return (
    <Shell>
      <Boundary key={current.path}>
        <Page path={current.path} />
      </Boundary>
    </Shell>
  );
}
